"""The relay slots of Redis mode: which server processes carry the database's change events to Redis.

A slot is a session advisory lock ``(RELAY_LOCK_CLASS, n)`` held on the
relay's own LISTEN connection, so it goes with that connection: when the
process dies, PostgreSQL frees the slot as it closes the session, and
nothing has to expire. realtime/notify_relay.py says why there are two.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from storage.errors import translate_errors

RELAY_LOCK_CLASS = 0x706F7274  # "port"; the second key is the slot's number, from 1

TAKE_SLOT = "SELECT pg_try_advisory_lock($1, $2)"
# Other slots held in this database right now: two-int advisory keys show as (classid, objid, objsubid = 2).
COUNT_PEERS = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = $1 AND objid <> $2
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


@dataclass(frozen=True, slots=True)
class RelaySlot:
    """The slot this connection took, and how many others were held when it did."""

    number: int
    peers: int


@translate_errors
async def take_relay_slot(connection: asyncpg.Connection, *, slots: int) -> RelaySlot | None:
    """The first free slot of ``1..slots``, now held by ``connection``'s session; None when all are taken."""
    for number in range(1, slots + 1):
        if await connection.fetchval(TAKE_SLOT, RELAY_LOCK_CLASS, number):
            peers: int = await connection.fetchval(COUNT_PEERS, RELAY_LOCK_CLASS, number)
            return RelaySlot(number=number, peers=peers)
    return None
