"""With ``BROADCAST_URL=redis://...``: carry the database's change events into Redis.

Events still come only from the database triggers; Redis only fans them out.
Every event is published as it came, on the one channel ``EVENTS_CHANNEL``
that every process subscribes to.

Two processes relay at once, a leader and a hot standby: each holds one of
``RELAY_SLOTS`` relay slots (a session advisory lock on its LISTEN
connection, storage/relay_slots.py) and publishes every event it hears.
Each event carries an id (its ``seq``), and every process keeps the first
copy of an id and drops the second (realtime/event_hub.py). So when a relay
dies (a crash, a kill -9, a hang, a lost connection), the other has already
published every event of the handover: nobody waits for a lock to expire or
a resync, and nothing is lost. Other processes try for a free slot every
``SLOT_RETRY_SECONDS``; a slot goes with its connection, so a dead relay's
slot is free as soon as PostgreSQL closes its session.

A relay LISTENs before it takes a slot, and keeps what it hears meanwhile
(storage/listen_connection.py), so from taking the slot on it has missed
nothing since its LISTEN. If another slot was held at that moment, that
relay has been publishing all along, and nothing was lost; if none was, the
events of the time nobody relayed are, and the new relay announces
``RESYNC`` first. Relays take a slot and count the others one at a time
(storage/relay_slots.py), so of two starting together exactly one finds
itself alone and resyncs. Publishing is one task in arrival order; when
Redis refuses, the event and whatever queues up behind it are dropped, and
the task retries ``RESYNC`` itself, with backoff, until Redis takes it: the
resync goes out as soon as Redis answers again, not with the next event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from realtime.change_events import EVENTS_CHANNEL, RESYNC
from realtime.metrics import NO_EVENT_METRICS, EventMetrics
from realtime.redis_backend import RedisUnavailable
from storage.listen_connection import ListenConnection
from storage.relay_slots import take_relay_slot

logger = logging.getLogger(__name__)

APPLICATION_NAME = "portraits-events-relay"
RELAY_SLOTS = 2  # a leader and a hot standby
SLOT_RETRY_SECONDS = 2.0
REDIS_RETRY_SECONDS = 1.0  # the first wait after a refusal; doubles up to MAX_REDIS_RETRY_SECONDS
MAX_REDIS_RETRY_SECONDS = 8.0

# (channel, message), as ``Broadcast.publish``; raises ``RedisUnavailable`` when Redis refuses.
Publish = Callable[[str, str], Awaitable[None]]


class NotifyRelay:
    """Relays NOTIFY to ``publish`` while this process holds a relay slot."""

    def __init__(
        self,
        dsn: str,
        publish: Publish,
        *,
        slots: int = RELAY_SLOTS,
        slot_retry_seconds: float = SLOT_RETRY_SECONDS,
        application_name: str = APPLICATION_NAME,
        redis_retry_seconds: float = REDIS_RETRY_SECONDS,
        metrics: EventMetrics = NO_EVENT_METRICS,
    ) -> None:
        self._publish = publish
        self._metrics = metrics
        self._redis_retry_seconds = redis_retry_seconds
        self._slots = slots
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self._listen = ListenConnection(
            dsn,
            listeners={EVENTS_CHANNEL: self._received},
            on_connected=self._connected,
            application_name=application_name,
            gate=self._take_slot,
            gate_retry_seconds=slot_retry_seconds,
        )
        self._publisher: asyncio.Task[None] | None = None
        self.slot: int | None = None  # the slot held, as of the last connection attempt (1 is the leader)
        self._alone = False  # no other slot was held when this one was taken

    @property
    def is_relaying(self) -> bool:
        return self.slot is not None

    async def start(self) -> None:
        self._publisher = asyncio.create_task(self._publish_in_order(), name="notify-relay-publisher")
        await self._listen.start()

    async def close(self) -> None:
        """Stop relaying; the other relay, if any, goes on publishing everything this one would have."""
        slot = self.slot
        await self._listen.close()
        self.slot = None
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
        if slot is not None:
            logger.info("stopped relaying change events to Redis (slot %d of %d)", slot, self._slots)

    async def _take_slot(self, connection: asyncpg.Connection) -> bool:
        taken = await take_relay_slot(connection, slots=self._slots)
        self.slot = None if taken is None else taken.number
        self._alone = taken is not None and taken.peers == 0
        return taken is not None

    def _connected(self, after_gap: bool) -> None:
        if after_gap:
            self._metrics.reconnected("relay")
        if self._alone:  # nobody relayed before this one: what was raised meanwhile is lost
            self._outbox.put_nowait(RESYNC)
        logger.info(
            "relaying change events to Redis (slot %s of %d)%s", self.slot, self._slots,
            "; no other relay was running, so every subscriber resyncs" if self._alone else "",
        )

    def _received(self, payload: str) -> None:
        self._outbox.put_nowait(payload)

    async def _publish_in_order(self) -> None:
        while True:
            message = await self._outbox.get()
            if await self._published(message):
                continue
            # Refused: the events lost since are covered by a resync, which is owed now, not with the next event.
            retry = self._redis_retry_seconds
            while True:
                await asyncio.sleep(retry)
                retry = min(retry * 2, MAX_REDIS_RETRY_SECONDS)
                # What piled up before this attempt is covered by the resync sent after it; dropping it
                # keeps an outage from growing memory. What comes while it is sent is published after it.
                while not self._outbox.empty():
                    self._outbox.get_nowait()
                if await self._published(RESYNC):
                    logger.info("Redis takes change events again; every subscriber resyncs")
                    break

    async def _published(self, message: str) -> bool:
        """Publish one message; False, logged, when Redis refused it (or publishing hit a bug)."""
        try:
            await self._publish(EVENTS_CHANNEL, message)
            return True
        except RedisUnavailable as error:
            logger.warning("cannot publish change events to Redis (%s); will resync", error)
        except Exception:  # a bug must not stop the relay: log it, and resync as for a refusal
            logger.exception("publishing change events failed; will resync")
        return False
