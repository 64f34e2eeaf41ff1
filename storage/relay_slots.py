"""The relay slots of Redis mode: which server processes carry the database's change events to Redis.

A slot is a session advisory lock ``(RELAY_LOCK_CLASS, n)`` held on the
relay's own LISTEN connection, so it goes with that connection: when the
process dies, PostgreSQL frees the slot as it closes the session, and
nothing has to expire. realtime/notify_relay.py says why there are two.

Taking a slot and counting the others is one step as far as other relays
can tell: both run in one transaction that first waits for a
transaction-level advisory lock (``RELAY_TAKE_LOCK_CLASS``), so two relays
starting together take their slots one after the other, and exactly one of
them sees no peer. Without it, each could take its slot before the other
counts, both see a peer, and neither resyncs for the time nobody relayed.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from storage.database import Connection
from storage.errors import translate_errors

RELAY_LOCK_CLASS = 0x706F7274  # "port"; the second key is the slot's number, from 1
# Serialises take-and-count; a class of its own, so COUNT_PEERS never counts it as a slot.
RELAY_TAKE_LOCK_CLASS = 0x706F7275

SERIALISE_TAKING = "SELECT pg_advisory_xact_lock($1, 0)"
TAKE_SLOT = "SELECT pg_try_advisory_lock($1, $2)"
# Slots held in this database right now: two-int advisory keys show as (classid, objid, objsubid = 2).
HELD = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = $1
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
# The others: every held slot but ``$2``.
COUNT_PEERS = HELD + "    AND objid <> $2\n"


@dataclass(frozen=True, slots=True)
class RelaySlot:
    """The slot this connection took, and how many others were held when it did."""

    number: int
    peers: int


@translate_errors
async def take_relay_slot(connection: asyncpg.Connection, *, slots: int) -> RelaySlot | None:
    """The first free slot of ``1..slots``, now held by ``connection``'s session; None when all are taken.

    The slot lock is session-level, so it outlives the transaction; the
    transaction only holds ``RELAY_TAKE_LOCK_CLASS`` until the count is done.
    """
    async with connection.transaction():
        await connection.execute(SERIALISE_TAKING, RELAY_TAKE_LOCK_CLASS)
        for number in range(1, slots + 1):
            if await connection.fetchval(TAKE_SLOT, RELAY_LOCK_CLASS, number):
                peers: int = await connection.fetchval(COUNT_PEERS, RELAY_LOCK_CLASS, number)
                return RelaySlot(number=number, peers=peers)
    return None


@translate_errors
async def count_held(connection: Connection) -> int:
    """How many relay slots are held in this database now (for operators and the failover benchmark)."""
    held: int = await connection.fetchval(HELD, RELAY_LOCK_CLASS)
    return held
