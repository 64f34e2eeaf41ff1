"""A ``broadcaster`` backend on PostgreSQL LISTEN/NOTIFY, ours instead of the package's.

broadcaster 0.3.1's own Postgres backend runs concurrent publishes on one
connection (they fail: encode/broadcaster#22) and never notices a lost
connection, so its subscribers wait forever (#66). This one:

- LISTENs on one channel (``EVENTS_CHANNEL``, every change event) over one
  dedicated connection per process (``ListenConnection``: health check,
  reconnect with backoff), so re-LISTENing after a reconnect is one statement.
- After a reconnect, puts ``RESYNC`` on the channel if it is subscribed:
  whatever was sent while it was away is lost, so subscribers re-read.
- ``next_published`` only waits on an in-memory queue: it never raises, so
  broadcaster's listener task never dies.
"""

from __future__ import annotations

import asyncio
from typing import Any

from broadcaster import BroadcastBackend, Event

from realtime.change_events import EVENTS_CHANNEL, RESYNC
from realtime.metrics import NO_EVENT_METRICS, EventMetrics
from storage.listen_connection import HEALTH_CHECK_SECONDS, ListenConnection

APPLICATION_NAME = "portraits-events-listen"
NOTIFY = "SELECT pg_notify($1, $2)"


class PostgresNotifyBackend(BroadcastBackend):
    """broadcaster's backend interface over one LISTEN connection carrying one channel."""

    def __init__(
        self,
        dsn: str,
        *,
        channel: str = EVENTS_CHANNEL,
        application_name: str = APPLICATION_NAME,
        health_check_seconds: float = HEALTH_CHECK_SECONDS,
        metrics: EventMetrics = NO_EVENT_METRICS,
    ) -> None:
        # broadcaster's base __init__ only raises (it wants a URL); nothing of it to run.
        self._channel = channel
        self._subscribed = False
        self._metrics = metrics
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._listen = ListenConnection(
            dsn,
            listeners={channel: self._received},
            on_connected=self._connected,
            application_name=application_name,
            health_check_seconds=health_check_seconds,
        )

    async def connect(self) -> None:
        await self._listen.start()

    async def disconnect(self) -> None:
        await self._listen.close()

    async def subscribe(self, channel: str) -> None:
        self._check(channel)
        self._subscribed = True

    async def unsubscribe(self, channel: str) -> None:
        self._check(channel)
        self._subscribed = False

    async def publish(self, channel: str, message: Any) -> None:
        """NOTIFY ``message`` as the triggers do (a change event, or ``RESYNC`` for every process); for tools and tests.

        Raises ``StorageUnavailable`` while the connection is down.
        """
        self._check(channel)
        await self._listen.execute(NOTIFY, channel, str(message))

    async def next_published(self) -> Event:
        return await self._events.get()

    def _check(self, channel: str) -> None:
        if channel != self._channel:
            raise ValueError(f"this backend carries the one channel {self._channel!r}, not {channel!r}")

    def _received(self, payload: str) -> None:
        if self._subscribed:
            self._events.put_nowait(Event(self._channel, payload))

    def _connected(self, after_gap: bool) -> None:
        if after_gap:
            self._metrics.reconnected("events")
        if after_gap and self._subscribed:
            self._events.put_nowait(Event(self._channel, RESYNC))
