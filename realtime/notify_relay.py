"""With ``BROADCAST_URL=redis://...``: carry the database's change events into Redis.

Events still come only from the database triggers; Redis only fans them out.
Every event is published as it came, on the one channel ``EVENTS_CHANNEL``
that every process subscribes to. One process at a time relays (whoever
holds a session advisory lock on its LISTEN connection), so each event
reaches Redis once however many servers run. The other processes retry the
lock every few seconds; the lock goes with the connection, so when the
relaying process dies, another takes over, and announces ``RESYNC`` since
events of the handover are lost. Publishing is one task in arrival order;
when Redis refuses, the event is dropped and ``RESYNC`` goes out as soon as
Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from realtime.change_events import EVENTS_CHANNEL, RESYNC
from realtime.redis_backend import RedisUnavailable
from storage.listen_connection import ListenConnection

logger = logging.getLogger(__name__)

APPLICATION_NAME = "portraits-events-relay"
RELAY_LOCK_KEY = 0x706F7274726F6C  # "portrol": one relay per database
LEADER_RETRY_SECONDS = 2.0
REDIS_RETRY_SECONDS = 1.0

# (channel, message), as ``Broadcast.publish``; raises ``RedisUnavailable`` when Redis refuses.
Publish = Callable[[str, str], Awaitable[None]]


class NotifyRelay:
    """Relays NOTIFY to ``publish`` while this process holds the relay lock."""

    def __init__(self, dsn: str, publish: Publish, *, leader_retry_seconds: float = LEADER_RETRY_SECONDS) -> None:
        self._publish = publish
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self._listen = ListenConnection(
            dsn,
            listeners={EVENTS_CHANNEL: self._received},
            on_connected=self._connected,
            application_name=APPLICATION_NAME,
            gate=self._take_lead,
            gate_retry_seconds=leader_retry_seconds,
        )
        self._publisher: asyncio.Task[None] | None = None
        self.is_leader = False  # as of the last connection attempt

    async def start(self) -> None:
        self._publisher = asyncio.create_task(self._publish_in_order(), name="notify-relay-publisher")
        await self._listen.start()

    async def close(self) -> None:
        await self._listen.close()
        self.is_leader = False
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher

    async def _take_lead(self, connection: asyncpg.Connection) -> bool:
        self.is_leader = bool(await connection.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY))
        return self.is_leader

    def _connected(self, after_gap: bool) -> None:
        # Leading now: events of the time nobody led (or before this process listened) are lost.
        self._outbox.put_nowait(RESYNC)

    def _received(self, payload: str) -> None:
        self._outbox.put_nowait(payload)

    async def _publish_in_order(self) -> None:
        owe_resync = False
        while True:
            message = await self._outbox.get()
            try:
                if owe_resync:
                    await self._publish(EVENTS_CHANNEL, RESYNC)
                    owe_resync = False
                await self._publish(EVENTS_CHANNEL, message)
                continue
            except RedisUnavailable as error:
                logger.warning("cannot publish change events to Redis (%s); will resync", error)
            except Exception:  # a bug must not stop the relay: log it, and resync as for a refusal
                logger.exception("publishing change events failed; will resync")
            owe_resync = True
            await asyncio.sleep(REDIS_RETRY_SECONDS)
            # What piled up meanwhile is covered by the resync; drop it so an outage cannot grow memory.
            while not self._outbox.empty():
                self._outbox.get_nowait()
