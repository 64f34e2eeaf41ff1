"""A ``broadcaster`` backend on PostgreSQL LISTEN/NOTIFY, ours instead of the package's.

broadcaster 0.3.1's own Postgres backend runs concurrent publishes on one
connection (they fail: encode/broadcaster#22) and never notices a lost
connection, so its subscribers wait forever (#66). This one:

- LISTENs on the one ``EVENTS_CHANNEL`` over one dedicated connection per
  process (``ListenConnection``), and routes each event to its owner's
  channel (``user_channel``) in memory; events for users nobody here
  subscribes to are dropped at once. So a process holds one LISTEN however
  many users it serves, and re-LISTENing after a reconnect is one statement.
- After a reconnect, puts ``RESYNC`` on every subscribed channel: whatever
  was sent while it was away is lost, so subscribers re-read their state.
- ``next_published`` only waits on an in-memory queue: it never raises, so
  broadcaster's listener task never dies.
"""

from __future__ import annotations

import asyncio
from typing import Any

from broadcaster import Event

from realtime.change_events import EVENTS_CHANNEL, RESYNC, channel_of
from storage.listen_connection import HEALTH_CHECK_SECONDS, ListenConnection

APPLICATION_NAME = "portraits-events-listen"
NOTIFY = "SELECT pg_notify($1, $2)"


class PostgresNotifyBackend:
    """Implements broadcaster's backend interface (connect, subscribe, publish, next_published, ...)."""

    def __init__(
        self, dsn: str, *, application_name: str = APPLICATION_NAME, health_check_seconds: float = HEALTH_CHECK_SECONDS
    ) -> None:
        self._channels: set[str] = set()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._listen = ListenConnection(
            dsn,
            listeners={EVENTS_CHANNEL: self._route},
            on_connected=self._connected,
            application_name=application_name,
            health_check_seconds=health_check_seconds,
        )

    async def connect(self) -> None:
        await self._listen.start()

    async def disconnect(self) -> None:
        await self._listen.close()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def publish(self, channel: str, message: Any) -> None:
        """NOTIFY ``message`` (a change event naming its user) as the triggers do; for tools and tests.

        Raises ``StorageUnavailable`` while the connection is down, ``ValueError``
        when the message does not belong on ``channel``.
        """
        if channel_of(str(message)) != channel:
            raise ValueError(f"a change event for {channel} must name that channel's user")
        await self._listen.execute(NOTIFY, EVENTS_CHANNEL, str(message))

    async def next_published(self) -> Event:
        return await self._events.get()

    def _route(self, payload: str) -> None:
        channel = channel_of(payload)
        if channel is not None and channel in self._channels:
            self._events.put_nowait(Event(channel, payload))

    def _connected(self, after_gap: bool) -> None:
        if after_gap:
            for channel in list(self._channels):
                self._events.put_nowait(Event(channel, RESYNC))
