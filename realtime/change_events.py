"""The change events the database sends (migration 0004), and the one channel they travel on.

PostgreSQL sends every event on the NOTIFY channel ``EVENTS_CHANNEL``, and
the same name is the one broadcaster channel (and, in Redis mode, the one
Redis channel) that carries every event to every process: each process
subscribes once and routes by the event's user in memory
(realtime/event_hub.py). After a gap in which events may have been lost,
``RESYNC`` goes on that channel and every subscriber re-reads its state.
Each event carries an id (``seq``, migration 0007), so a process that hears
an event twice (two Redis relays publish each one) keeps the first copy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

import orjson

logger = logging.getLogger(__name__)

EVENTS_CHANNEL = "portraits_events"
RESYNC = '{"resync":true}'

JOB = "job"
CHARACTER = "character"
DELETE = "delete"


@dataclass(frozen=True, slots=True)
class ChangeNotice:
    """A row changed; subscribers re-read it, since the notice carries no data beyond these ids."""

    user_id: UUID
    kind: str
    op: str
    id: UUID
    status: str | None = None
    destination: str | None = None
    at_ms: int = 0
    seq: int = 0  # the event's id, unique per database; 0 when the sender gave none


@dataclass(frozen=True, slots=True)
class Resync:
    """Events may have been lost: re-read everything you show."""


def parse_message(message: str) -> ChangeNotice | Resync | None:
    """A broadcaster message as a notice, ``Resync``, or None (logged) when it is malformed."""
    try:
        data = orjson.loads(message)
        if data.get("resync") is True:
            return Resync()
        return ChangeNotice(
            user_id=UUID(data["user"]),
            kind=str(data["kind"]),
            op=str(data["op"]),
            id=UUID(data["id"]),
            status=data.get("status"),
            destination=data.get("destination"),
            at_ms=int(data.get("at") or 0),
            seq=int(data.get("seq") or 0),
        )
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        logger.warning("ignoring a malformed change event %.200r", message)
        return None
