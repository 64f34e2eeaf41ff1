"""The change events the database sends (migration 0004) and the channels they travel on.

PostgreSQL sends every event on one NOTIFY channel, ``EVENTS_CHANNEL``. Fan-out
inside and across processes goes through ``broadcaster`` on per-user channels
(``user_channel``), so an event reaches only its owner's subscribers. After a
gap in which events may have been lost, ``RESYNC`` is sent on the affected
channels (or on ``RESYNC_CHANNEL``, meaning every channel) and subscribers
re-read their state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

import orjson

logger = logging.getLogger(__name__)

EVENTS_CHANNEL = "portraits_events"
USER_CHANNEL_PREFIX = "portraits.user."
RESYNC_CHANNEL = "portraits.resync"
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


@dataclass(frozen=True, slots=True)
class Resync:
    """Events may have been lost: re-read everything you show."""


def user_channel(user_id: UUID | str) -> str:
    return f"{USER_CHANNEL_PREFIX}{user_id}"


def channel_of(payload: str) -> str | None:
    """The per-user channel a NOTIFY payload belongs on, None when it is malformed."""
    try:
        user = orjson.loads(payload)["user"]
        return user_channel(UUID(user))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        logger.warning("ignoring a malformed change event %.200r", payload)
        return None


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
        )
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        logger.warning("ignoring a malformed change event %.200r", message)
        return None
