"""broadcaster's Redis backend, made to survive a lost Redis connection.

broadcaster 0.3.1's ``RedisBackend`` reads its pubsub connection in one task;
when Redis drops the connection (a restart, ``CLIENT KILL``, a network cut)
that task dies and every subscriber waits forever, as #66 describes for its
Postgres backend. This subclass keeps everything else of it (publish,
subscribe, the queue ``next_published`` reads) and replaces only that task:
on a lost connection it opens a new pubsub with backoff, SUBSCRIBEs to the
same channels again, and puts ``RESYNC`` on each, since what was published
meanwhile is lost.
"""

from __future__ import annotations

import asyncio
import logging

from broadcaster import Event
from broadcaster._backends.redis import RedisBackend
from redis.exceptions import RedisError

from realtime.change_events import RESYNC
from storage.listen_connection import INITIAL_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS

logger = logging.getLogger(__name__)


class ReconnectingRedisBackend(RedisBackend):
    async def _pubsub_listener(self) -> None:
        while True:
            await self._ready.wait()
            try:
                async for message in self._pubsub.listen():
                    if message["type"] == "message":
                        await self._queue.put(Event(channel=message["channel"].decode(), message=message["data"].decode()))
                # listen() ends when no channel is subscribed; wait for the next subscribe
                self._ready.clear()
                continue
            except (RedisError, OSError) as error:
                logger.warning("Redis pubsub connection lost (%s); reconnecting", error)
            await self._resubscribe()

    async def _resubscribe(self) -> None:
        backoff = INITIAL_BACKOFF_SECONDS
        while True:
            lost = self._pubsub
            channels = [name.decode() if isinstance(name, bytes) else str(name) for name in lost.channels]
            try:
                fresh = self._conn.pubsub()
                if channels:
                    await fresh.subscribe(*channels)
            except (RedisError, OSError) as error:
                logger.warning("Redis still unreachable (%s); retrying in %.2f s", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            self._pubsub = fresh
            try:
                await lost.aclose()
            except (RedisError, OSError):
                pass
            logger.info("Redis pubsub restored on %d channel(s)", len(channels))
            for channel in channels:
                self._queue.put_nowait(Event(channel=channel, message=RESYNC))
            if not channels:
                self._ready.clear()
            return
