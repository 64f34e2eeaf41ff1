"""A ``broadcaster`` backend on Redis pub/sub (redis-py's asyncio client) that survives a lost connection.

broadcaster 0.3.1's own Redis backend reads its pub/sub connection in one
task that dies with the connection (a Redis restart, ``CLIENT KILL``, a
network cut), after which its subscribers wait forever, as #66 describes for
its Postgres backend. This one keeps one reader task per process that:

- on a lost connection (or a ``PING`` left unanswered after a quiet spell,
  for a network that dies silently) opens a new one with backoff and
  SUBSCRIBEs to the same channels again;
- puts ``RESYNC`` on a channel once Redis confirms its SUBSCRIBE on a
  connection opened after a gap, since what was published meanwhile is lost;
- is cancelled by ``disconnect``, so a clean stop logs no loss.

redis-py's own retries are off (``retry`` with no retries): they would
reconnect and re-subscribe silently, and nobody would know to resync.
``next_published`` only waits on an in-memory queue and never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from broadcaster import BroadcastBackend, Event
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from realtime.change_events import RESYNC
from realtime.metrics import NO_EVENT_METRICS, EventMetrics
from storage.listen_connection import HEALTH_CHECK_SECONDS, HEALTH_CHECK_TIMEOUT_SECONDS, Backoff

logger = logging.getLogger(__name__)

REDIS_ERRORS = (RedisError, OSError)
CONNECT_TIMEOUT_SECONDS = 5.0


class RedisUnavailable(Exception):
    """Redis refused a command or cannot be reached (redis-py's errors, wrapped once here)."""


LOST = (*REDIS_ERRORS, RedisUnavailable)


class RedisPubSubBackend(BroadcastBackend):
    """broadcaster's backend interface on Redis PUBLISH / SUBSCRIBE, reconnecting and resyncing by itself."""

    def __init__(
        self, url: str, *, health_check_seconds: float = HEALTH_CHECK_SECONDS, metrics: EventMetrics = NO_EVENT_METRICS
    ) -> None:
        # broadcaster's base __init__ only raises; nothing of it to run.
        self._url = url
        self._metrics = metrics
        self._health_check_seconds = health_check_seconds
        self._channels: set[str] = set()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._client: Redis | None = None
        self._pubsub: PubSub | None = None  # the live pub/sub connection, None while down
        self._after_gap = False  # False only on the first connection, opened by connect()
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Open the pub/sub connection inline if Redis answers; otherwise keep trying in the background."""
        self._client = Redis.from_url(
            self._url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_keepalive=True,
        )
        pubsub: PubSub | None = None
        try:
            pubsub = await self._open(self._client)
        except REDIS_ERRORS as error:
            logger.warning("cannot reach Redis yet (%s); retrying in the background", error)
        self._reader = asyncio.create_task(self._read_forever(self._client, pubsub), name="redis-pubsub-reader")

    async def disconnect(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._client is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._client.aclose()
            self._client = None
        logger.info("Redis pub/sub closed")

    async def subscribe(self, channel: str) -> None:
        """SUBSCRIBE now if connected; otherwise the next connection does (and resyncs the channel)."""
        self._channels.add(channel)
        await self._send(lambda pubsub: pubsub.subscribe(channel))

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        await self._send(lambda pubsub: pubsub.unsubscribe(channel))

    async def publish(self, channel: str, message: Any) -> None:
        """PUBLISH; raises ``RedisUnavailable`` when Redis refuses or cannot be reached."""
        if self._client is None:
            raise RedisUnavailable("the Redis backend is not connected")
        try:
            await self._client.publish(channel, message)
        except REDIS_ERRORS as error:
            raise RedisUnavailable(str(error) or type(error).__name__) from error

    async def next_published(self) -> Event:
        return await self._events.get()

    async def _send(self, command: Callable[[PubSub], Awaitable[object]]) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return
        try:
            await command(pubsub)
        except REDIS_ERRORS as error:
            # The reader hears of the loss too: it reconnects, SUBSCRIBEs to every channel and resyncs.
            logger.debug("pub/sub command failed (%s); the reader reconnects", error)

    async def _open(self, client: Redis) -> PubSub:
        """A connected pub/sub on every channel of ``_channels``, published as the live one before it SUBSCRIBEs."""
        pubsub = client.pubsub()
        try:
            await pubsub.ping()  # connects; the PONG comes back as a message
            # From here subscribe() sends its own SUBSCRIBE; every channel added before is in this snapshot.
            self._pubsub = pubsub
            channels = sorted(self._channels)
            if channels:
                await pubsub.subscribe(*channels)
        except BaseException:
            self._pubsub = None
            with contextlib.suppress(*REDIS_ERRORS):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves PubSub.aclose unannotated
            raise
        return pubsub

    async def _read_forever(self, client: Redis, pubsub: PubSub | None) -> None:
        """Move messages to the queue; reconnect with backoff when the connection is lost."""
        backoff = Backoff()
        while True:
            if pubsub is not None:
                opened_at = time.monotonic()
                try:
                    await self._pump(pubsub)
                except LOST as error:
                    reason = str(error) or type(error).__name__
                    logger.warning("Redis pub/sub connection lost (%s); reconnecting", reason)
                finally:
                    self._pubsub = None
                    with contextlib.suppress(*REDIS_ERRORS):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                pubsub = None
                await backoff.after_loss(opened_at)
            # Every channel this connection confirms was away, or joined while Redis was: resync it.
            self._after_gap = True
            try:
                pubsub = await self._open(client)
            except REDIS_ERRORS as error:
                logger.warning(
                    "Redis pub/sub still unreachable (%s); retrying in at most %.2f s", error, backoff.seconds
                )
                await backoff.wait()
                continue
            logger.info("Redis pub/sub restored on %d channel(s)", len(self._channels))
            self._metrics.reconnected("redis")

    async def _pump(self, pubsub: PubSub) -> None:
        """Queue each message until the connection fails; raises on a loss, never returns."""
        awaiting_pong = False
        while True:
            timeout = HEALTH_CHECK_TIMEOUT_SECONDS if awaiting_pong else self._health_check_seconds
            message = await pubsub.get_message(timeout=timeout)
            if message is None:  # quiet for ``timeout``
                if awaiting_pong:
                    raise RedisUnavailable(f"no answer to PING within {HEALTH_CHECK_TIMEOUT_SECONDS:g} s")
                await pubsub.ping()
                awaiting_pong = True
                continue
            awaiting_pong = False  # anything heard proves the connection alive
            kind = message["type"]
            if kind == "message":
                self._events.put_nowait(Event(_text(message["channel"]), _text(message["data"])))
            elif kind == "subscribe" and self._after_gap and _text(message["channel"]) in self._channels:
                self._events.put_nowait(Event(_text(message["channel"]), RESYNC))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
