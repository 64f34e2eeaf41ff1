"""The process's change-event hub: broadcaster's per-user channels, fanned out to subscriptions' mailboxes.

Each user with at least one live subscription in this process has one feed:
one broadcaster subscription on ``user_channel(user)`` and one task that
drains it at once into that user's mailboxes. A mailbox belongs to one
GraphQL subscription and coalesces what it has not yet taken per row (a
subscriber re-reads rows, so only "this row changed" matters, never how many
times); a mailbox that still holds more distinct rows than it may, or has
held rows untaken for too long, ends its subscription with
``SubscriberTooSlow``. So a slow client costs a bounded amount of memory
however many events it misses, and never slows anyone else's delivery.

``open_event_hub`` assembles it: our ``PostgresNotifyBackend`` by default, or
broadcaster's Redis backend (made to reconnect, ``ReconnectingRedisBackend``,
and fed by ``NotifyRelay``) when a ``redis://`` URL is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import urlparse
from uuid import UUID

from broadcaster import Broadcast

from storage.change_events import RESYNC_CHANNEL, ChangeNotice, Resync, parse_message, user_channel
from storage.notify_backend import PostgresNotifyBackend
from storage.notify_relay import NotifyRelay
from storage.redis_backend import ReconnectingRedisBackend

logger = logging.getLogger(__name__)

REDIS_SCHEMES = ("redis", "rediss")


class SubscriberTooSlow(Exception):
    """The subscriber fell too far behind; its subscription ends (the client may subscribe again)."""


class FeedClosed(Exception):
    """The server is shutting down, or events cannot be received at all."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a mailbox held: the rows that changed (one notice per row, the latest) and whether to re-read everything."""

    resync: bool
    notices: tuple[ChangeNotice, ...]


NoticeFilter = Callable[[ChangeNotice], bool]


class Mailbox:
    __slots__ = ("_accepts", "_max_pending", "_max_lag", "_pending", "_oldest", "_resync", "_failure", "_waiter")

    def __init__(self, accepts: NoticeFilter, *, max_pending: int, max_lag_seconds: float) -> None:
        self._accepts = accepts
        self._max_pending = max_pending
        self._max_lag = max_lag_seconds
        self._pending: dict[tuple[str, UUID], ChangeNotice] = {}
        self._oldest = 0.0
        self._resync = False
        self._failure: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    def offer(self, notice: ChangeNotice) -> None:
        if self._failure is not None or not self._accepts(notice):
            return
        key = (notice.kind, notice.id)
        pending = self._pending
        if key not in pending:
            if not pending:
                self._oldest = time.monotonic()
            elif len(pending) >= self._max_pending:
                self.fail(SubscriberTooSlow(f"more than {self._max_pending} changes are waiting to be sent"))
                return
            elif time.monotonic() - self._oldest > self._max_lag:
                self.fail(SubscriberTooSlow(f"changes have waited more than {self._max_lag:g} s to be sent"))
                return
        pending[key] = notice
        self._wake()

    def resync(self) -> None:
        if self._failure is None:
            self._resync = True
            self._wake()

    def fail(self, error: Exception) -> None:
        if self._failure is None:
            self._failure = error
            self._pending = {}
            self._wake()

    async def next(self) -> Delivery:
        """Wait for something to re-read; raises ``SubscriberTooSlow`` or ``FeedClosed`` when the subscription must end."""
        while True:
            if self._failure is not None:
                raise self._failure
            if self._pending or self._resync:
                delivery = Delivery(resync=self._resync, notices=tuple(self._pending.values()))
                self._pending = {}
                self._resync = False
                return delivery
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _UserFeed:
    __slots__ = ("mailboxes", "ready", "task")

    def __init__(self) -> None:
        self.mailboxes: set[Mailbox] = set()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None


class EventHub:
    def __init__(self, broadcast: Broadcast, *, relay: NotifyRelay | None = None) -> None:
        self._broadcast = broadcast
        self.relay = relay  # Redis mode: what feeds the broadcast backend from NOTIFY
        self._feeds: dict[UUID, _UserFeed] = {}
        self._stopping: dict[UUID, asyncio.Task[None]] = {}
        self._resync_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def subscriber_count(self) -> int:
        return sum(len(feed.mailboxes) for feed in self._feeds.values())

    @property
    def user_count(self) -> int:
        """Users with a live feed in this process (one broadcaster subscription each)."""
        return len(self._feeds)

    async def start(self) -> None:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._resync_task = asyncio.create_task(self._pump_resyncs(ready), name="event-hub-resync")
        await ready

    async def close(self) -> None:
        self._closed = True
        tasks = [feed.task for feed in self._feeds.values() if feed.task is not None]
        tasks += list(self._stopping.values())
        if self._resync_task is not None:
            tasks.append(self._resync_task)
        for feed in self._feeds.values():
            for mailbox in feed.mailboxes:
                mailbox.fail(FeedClosed("the server is shutting down"))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._feeds.clear()

    @contextlib.asynccontextmanager
    async def subscribe(
        self, user_id: UUID, *, accepts: NoticeFilter, max_pending: int, max_lag_seconds: float
    ) -> AsyncIterator[Mailbox]:
        """A mailbox of ``user_id``'s changes that ``accepts``; listening when this returns, so read state after it."""
        if self._closed:
            raise FeedClosed("the server is shutting down")
        feed = self._feeds.get(user_id)
        if feed is None:
            feed = self._feeds[user_id] = _UserFeed()
            feed.task = asyncio.create_task(self._pump(user_id, feed, self._stopping.pop(user_id, None)))
        mailbox = Mailbox(accepts, max_pending=max_pending, max_lag_seconds=max_lag_seconds)
        feed.mailboxes.add(mailbox)
        try:
            await asyncio.shield(feed.ready)
            yield mailbox
        finally:
            feed.mailboxes.discard(mailbox)
            if not feed.mailboxes and self._feeds.get(user_id) is feed:
                self._stop_feed(user_id, feed)

    def _stop_feed(self, user_id: UUID, feed: _UserFeed) -> None:
        del self._feeds[user_id]
        task = feed.task
        assert task is not None
        task.cancel()
        # A new feed for this user waits until this one has unsubscribed, so the
        # backend never sees subscribe, then a late unsubscribe of the old feed.
        self._stopping[user_id] = task
        task.add_done_callback(lambda done: self._forget_stopped(user_id, done))

    def _forget_stopped(self, user_id: UUID, task: asyncio.Task[None]) -> None:
        if self._stopping.get(user_id) is task:
            del self._stopping[user_id]

    async def _pump(self, user_id: UUID, feed: _UserFeed, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        try:
            async with self._broadcast.subscribe(user_channel(user_id)) as subscriber:
                feed.ready.set_result(None)
                while True:
                    event = await subscriber.get()
                    self._deliver(feed.mailboxes, event.message)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - the backend's own errors (e.g. Redis refused SUBSCRIBE)
            logger.warning("cannot receive change events for user %s: %s", user_id, error)
            failure = FeedClosed("change events cannot be received right now")
            if not feed.ready.done():
                feed.ready.set_exception(failure)
            for mailbox in list(feed.mailboxes):
                mailbox.fail(failure)
            if self._feeds.get(user_id) is feed:
                del self._feeds[user_id]

    async def _pump_resyncs(self, ready: asyncio.Future[None]) -> None:
        """``RESYNC_CHANNEL`` means every channel (the Redis relay cannot know which ones exist)."""
        async with self._broadcast.subscribe(RESYNC_CHANNEL) as subscriber:
            ready.set_result(None)
            while True:
                await subscriber.get()
                for feed in list(self._feeds.values()):
                    for mailbox in list(feed.mailboxes):
                        mailbox.resync()

    @staticmethod
    def _deliver(mailboxes: set[Mailbox], message: str) -> None:
        notice = parse_message(message)
        if notice is None:
            return
        if isinstance(notice, Resync):
            for mailbox in list(mailboxes):
                mailbox.resync()
            return
        for mailbox in list(mailboxes):
            mailbox.offer(notice)


@contextlib.asynccontextmanager
async def open_event_hub(database_url: str, *, broadcast_url: str | None = None) -> AsyncIterator[EventHub]:
    """The hub on our Postgres backend, or on broadcaster's Redis backend with the relay feeding it."""
    relay: NotifyRelay | None = None
    if broadcast_url is not None and urlparse(broadcast_url).scheme in REDIS_SCHEMES:
        broadcast = Broadcast(backend=ReconnectingRedisBackend(broadcast_url))
        relay = NotifyRelay(database_url, broadcast.publish)
    else:
        broadcast = Broadcast(backend=PostgresNotifyBackend(database_url))  # type: ignore[arg-type]  # duck-typed backend
    await broadcast.connect()
    hub = EventHub(broadcast, relay=relay)
    try:
        await hub.start()
        if relay is not None:
            await relay.start()
        yield hub
    finally:
        if relay is not None:
            await relay.close()
        await hub.close()
        await broadcast.disconnect()
