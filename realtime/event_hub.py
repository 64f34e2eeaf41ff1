"""The process's change-event hub: broadcaster's per-user channels, fanned out to subscriptions' mailboxes.

Each user with at least one live subscription in this process has one feed:
one broadcaster subscription on ``user_channel(user)`` that hands each event
at once to that user's mailboxes (realtime/sink_broadcast.py: no queue, no
task). A mailbox (realtime/mailbox.py) belongs to one GraphQL subscription and
is bounded, so a slow client never slows anyone else's delivery.

``open_event_hub`` assembles it: our ``PostgresNotifyBackend`` by default, or
broadcaster's Redis backend (made to reconnect, ``ReconnectingRedisBackend``,
and fed by ``NotifyRelay``) when a ``redis://`` URL is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlparse
from uuid import UUID

from broadcaster import Event

from realtime.change_events import RESYNC_CHANNEL, Resync, parse_message, user_channel
from realtime.mailbox import FeedClosed, Mailbox, NoticeFilter
from realtime.postgres_backend import PostgresNotifyBackend
from realtime.notify_relay import NotifyRelay
from realtime.redis_backend import ReconnectingRedisBackend
from realtime.sink_broadcast import SinkBroadcast

logger = logging.getLogger(__name__)

REDIS_SCHEMES = ("redis", "rediss")


def deliver(mailboxes: set[Mailbox], message: str) -> None:
    """Hand one broadcaster message to each mailbox: a notice to offer, or a resync."""
    notice = parse_message(message)
    if notice is None:
        return
    if isinstance(notice, Resync):
        for mailbox in list(mailboxes):
            mailbox.resync()
        return
    for mailbox in list(mailboxes):
        mailbox.offer(notice)


class _UserFeed:
    """One user's broadcaster subscription in this process: a sink that fills the user's mailboxes at once."""

    __slots__ = ("mailboxes", "ready")

    def __init__(self) -> None:
        self.mailboxes: set[Mailbox] = set()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def put(self, event: Event | None) -> None:
        if event is not None:
            deliver(self.mailboxes, event.message)


class _ResyncSink:
    """``RESYNC_CHANNEL`` means every channel (the Redis relay cannot know which ones exist)."""

    def __init__(self, feeds: dict[UUID, _UserFeed]) -> None:
        self._feeds = feeds

    async def put(self, event: Event | None) -> None:
        if event is None:
            return
        for feed in list(self._feeds.values()):
            for mailbox in list(feed.mailboxes):
                mailbox.resync()


class EventHub:
    def __init__(self, broadcast: SinkBroadcast, *, relay: NotifyRelay | None = None) -> None:
        self._broadcast = broadcast
        self.relay = relay  # Redis mode: what feeds the broadcast backend from NOTIFY
        self._feeds: dict[UUID, _UserFeed] = {}
        # Feeds still unsubscribing: a new feed for the same user waits for it, so
        # the backend never sees subscribe, then a late unsubscribe of the old feed.
        self._detaching: dict[UUID, asyncio.Task[None]] = {}
        self._resync_sink = _ResyncSink(self._feeds)
        self._closed = False

    @property
    def subscriber_count(self) -> int:
        return sum(len(feed.mailboxes) for feed in self._feeds.values())

    @property
    def user_count(self) -> int:
        """Users with a live feed in this process (one broadcaster subscription each)."""
        return len(self._feeds)

    async def start(self) -> None:
        await self._broadcast.attach(RESYNC_CHANNEL, self._resync_sink)

    async def close(self) -> None:
        self._closed = True
        for feed in self._feeds.values():
            for mailbox in feed.mailboxes:
                mailbox.fail(FeedClosed("the server is shutting down"))
        await asyncio.gather(*self._detaching.values(), return_exceptions=True)
        self._feeds.clear()

    def subscribe(self, user_id: UUID, *, accepts: NoticeFilter, max_pending: int, max_lag_seconds: float) -> HubSubscription:
        """A mailbox of ``user_id``'s changes that ``accepts``, as ``async with``; listening once entered, so read state after."""
        return HubSubscription(self, user_id, Mailbox(accepts, max_pending=max_pending, max_lag_seconds=max_lag_seconds))

    async def _join(self, user_id: UUID, mailbox: Mailbox) -> _UserFeed:
        """Put ``mailbox`` on the user's feed, attaching the feed first if it is new; the feed is listening on return."""
        if self._closed:
            raise FeedClosed("the server is shutting down")
        feed = self._feeds.get(user_id)
        if feed is None:
            feed = self._feeds[user_id] = _UserFeed()
            feed.mailboxes.add(mailbox)
            await self._attach(user_id, feed)
        else:
            feed.mailboxes.add(mailbox)
            try:
                await asyncio.shield(feed.ready)
            except BaseException:
                self._leave(user_id, feed, mailbox)
                raise
        return feed

    async def _attach(self, user_id: UUID, feed: _UserFeed) -> None:
        try:
            detaching = self._detaching.get(user_id)
            if detaching is not None:
                await asyncio.shield(detaching)
            await self._broadcast.attach(user_channel(user_id), feed)
        except BaseException as error:
            logger.warning("cannot receive change events for user %s: %r", user_id, error)
            failure = FeedClosed("change events cannot be received right now")
            feed.ready.set_exception(failure)
            feed.ready.exception()  # retrieved: waiters get it through their shields
            if self._feeds.get(user_id) is feed:
                del self._feeds[user_id]
            if isinstance(error, Exception):
                raise failure from error
            raise
        feed.ready.set_result(None)

    def _leave(self, user_id: UUID, feed: _UserFeed, mailbox: Mailbox) -> None:
        feed.mailboxes.discard(mailbox)
        if feed.mailboxes or self._feeds.get(user_id) is not feed:
            return
        del self._feeds[user_id]
        task = asyncio.get_running_loop().create_task(self._broadcast.detach(user_channel(user_id), feed))
        self._detaching[user_id] = task
        task.add_done_callback(lambda done: self._forget_detached(user_id, done))

    def _forget_detached(self, user_id: UUID, task: asyncio.Task[None]) -> None:
        if self._detaching.get(user_id) is task:
            del self._detaching[user_id]
        if not task.cancelled() and task.exception() is not None:
            logger.warning("unsubscribing user %s failed: %r", user_id, task.exception())


class HubSubscription:
    """One subscription's stay on its user's feed.

    A class rather than an ``asynccontextmanager``: it lives as long as the
    subscription, and a generator-based one would keep a suspended generator,
    its frame and an event-loop registration per idle subscriber.
    """

    __slots__ = ("_hub", "_user_id", "_mailbox", "_feed")

    def __init__(self, hub: EventHub, user_id: UUID, mailbox: Mailbox) -> None:
        self._hub = hub
        self._user_id = user_id
        self._mailbox = mailbox
        self._feed: _UserFeed | None = None

    async def __aenter__(self) -> Mailbox:
        self._feed = await self._hub._join(self._user_id, self._mailbox)  # noqa: SLF001 - the hub's own helper
        return self._mailbox

    async def __aexit__(self, *exc_info: object) -> None:
        if self._feed is not None:
            self._hub._leave(self._user_id, self._feed, self._mailbox)  # noqa: SLF001
            self._feed = None


@contextlib.asynccontextmanager
async def open_event_hub(database_url: str, *, broadcast_url: str | None = None) -> AsyncIterator[EventHub]:
    """The hub on our Postgres backend, or on broadcaster's Redis backend with the relay feeding it."""
    relay: NotifyRelay | None = None
    if broadcast_url is not None and urlparse(broadcast_url).scheme in REDIS_SCHEMES:
        broadcast = SinkBroadcast(backend=ReconnectingRedisBackend(broadcast_url))
        relay = NotifyRelay(database_url, broadcast.publish)
    else:
        broadcast = SinkBroadcast(backend=PostgresNotifyBackend(database_url))  # type: ignore[arg-type]  # duck-typed backend
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
