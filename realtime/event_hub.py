"""The process's change-event hub: one broadcaster subscription, routed to the subscriptions' mailboxes.

Each process subscribes once (``Broadcast.subscribe(EVENTS_CHANNEL)``, the
channel that carries every event) and one task routes each event to the
mailboxes of its user, the hub's registry of who listens here (user ->
mailboxes); a resync goes to every mailbox. A mailbox (realtime/mailbox.py)
belongs to one GraphQL subscription and is bounded, so a slow client never
slows anyone else's delivery, and an idle subscriber costs a mailbox and a
set entry: no task, no queue.

In Redis mode two relays publish every event (realtime/notify_relay.py), so
the hub hears most events twice: it keeps the first copy of each event id
and drops the second (``RecentEvents``, a bounded window). A copy that
comes later than the window costs a subscriber one re-read that finds
nothing new to send, never a lost or repeated frame.

``open_event_hub`` assembles it: ``Broadcast`` on our ``PostgresNotifyBackend``
by default, or on our ``RedisPubSubBackend`` fed by ``NotifyRelay`` when a
``redis://`` URL is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlparse
from uuid import UUID

from broadcaster import Broadcast

from realtime.change_events import EVENTS_CHANNEL, ChangeNotice, Resync, parse_message
from realtime.mailbox import FeedClosed, Mailbox, NoticeFilter
from realtime.metrics import NO_EVENT_METRICS, EventMetrics
from realtime.notify_relay import NotifyRelay
from realtime.postgres_backend import PostgresNotifyBackend
from realtime.redis_backend import RedisPubSubBackend

logger = logging.getLogger(__name__)

REDIS_SCHEMES = ("redis", "rediss")
# Event ids remembered to drop a second copy. Both relays publish an event within milliseconds
# of each other, so this covers seconds of a heavy burst; 0.8 MB when full (an int in a set and a deque each).
RECENT_EVENTS = 4096


class RecentEvents:
    """The ids of the last ``size`` events heard, to tell a second copy from a new event."""

    __slots__ = ("_ids", "_order")

    def __init__(self, size: int = RECENT_EVENTS) -> None:
        self._ids: set[int] = set()
        self._order: deque[int] = deque(maxlen=size)

    def first_copy(self, notice: ChangeNotice) -> bool:
        """Whether ``notice`` is new (then remembered); an event without an id always is."""
        if not notice.seq:
            return True
        # The row's id with the event's: seq alone is unique per database, and one Redis may carry several's.
        key = notice.id.int << 64 | notice.seq
        if key in self._ids:
            return False
        if len(self._order) == self._order.maxlen:
            self._ids.discard(self._order[0])
        self._order.append(key)
        self._ids.add(key)
        return True


class TooManySubscriptions(Exception):
    """The user already has as many live subscriptions in this process as allowed."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"too many subscriptions for this user (limit {limit})")
        self.limit = limit


class EventHub:
    """Who listens in this process (user -> mailboxes), fed by one broadcaster subscription."""

    def __init__(
        self, broadcast: Broadcast, *, relay: NotifyRelay | None = None, metrics: EventMetrics = NO_EVENT_METRICS
    ) -> None:
        self._broadcast = broadcast
        self._metrics = metrics
        self.relay = relay  # Redis mode: what feeds Redis from NOTIFY
        self._mailboxes: dict[UUID, set[Mailbox]] = {}
        self._router: asyncio.Task[None] | None = None
        self._closed = False
        self._recent = RecentEvents()

    @property
    def subscriber_count(self) -> int:
        return sum(len(mailboxes) for mailboxes in self._mailboxes.values())

    @property
    def user_count(self) -> int:
        """Users with at least one live subscription in this process."""
        return len(self._mailboxes)

    async def start(self) -> None:
        """Subscribe to every event; on return the subscription is in place."""
        listening = asyncio.get_running_loop().create_future()
        self._router = asyncio.create_task(self._route_events(listening), name="event-hub-router")
        await listening

    async def close(self) -> None:
        """End every subscription (``FeedClosed``), then leave the broadcaster channel; logs what it ended."""
        ended = self.subscriber_count
        self._closed = True
        self._fail_all(FeedClosed("the server is shutting down"))
        if self._router is not None:
            self._router.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._router
        logger.info("change-event hub closed; %d subscription(s) ended", ended)

    def subscribe(
        self, user_id: UUID, *, accepts: NoticeFilter, max_pending: int, max_lag_seconds: float, max_per_user: int
    ) -> HubSubscription:
        """A mailbox of ``user_id``'s changes that ``accepts``, as ``async with``: listening once entered.

        Entering raises ``TooManySubscriptions`` when the user already has
        ``max_per_user`` mailboxes here: every event of a user is matched and
        rendered once per subscription, so their count bounds what one
        mutation costs.
        """
        mailbox = Mailbox(accepts, max_pending=max_pending, max_lag_seconds=max_lag_seconds)
        return HubSubscription(self, user_id, mailbox, max_per_user)

    def route(self, message: str) -> None:
        """Hand one event to its user's mailboxes, once however many copies come; a resync to every mailbox."""
        notice = parse_message(message)
        if notice is None:
            return
        if isinstance(notice, Resync):
            self._metrics.resynced()
            for mailboxes in self._mailboxes.values():
                for mailbox in mailboxes:
                    mailbox.resync()
            return
        if not self._recent.first_copy(notice):
            return
        for mailbox in self._mailboxes.get(notice.user_id, ()):
            mailbox.offer(notice)

    def join(self, user_id: UUID, mailbox: Mailbox, max_per_user: int) -> None:
        """Register the mailbox; the count and the check happen in one step (no await), so the cap is exact."""
        if self._closed:
            raise FeedClosed("the server is shutting down")
        mailboxes = self._mailboxes.setdefault(user_id, set())
        if len(mailboxes) >= max_per_user:
            raise TooManySubscriptions(max_per_user)
        mailboxes.add(mailbox)

    def leave(self, user_id: UUID, mailbox: Mailbox) -> None:
        mailboxes = self._mailboxes.get(user_id)
        if mailboxes is not None:
            mailboxes.discard(mailbox)
            if not mailboxes:
                del self._mailboxes[user_id]

    async def _route_events(self, listening: asyncio.Future[None]) -> None:
        try:
            async with self._broadcast.subscribe(EVENTS_CHANNEL) as subscriber:
                listening.set_result(None)
                while True:  # Subscriber.get rather than ``async for``: broadcaster types __aiter__ as "... | None"
                    self.route((await subscriber.get()).message)
        except Exception as error:
            if not listening.done():
                listening.set_exception(error)  # start() raises it
                return
            logger.exception("the change-event router failed; ending every subscription")
        if not self._closed:  # the broadcaster subscription ended: nobody here hears events any more
            self._closed = True
            self._fail_all(FeedClosed("change events cannot be received right now"))

    def _fail_all(self, error: FeedClosed) -> None:
        for mailboxes in self._mailboxes.values():
            for mailbox in mailboxes:
                mailbox.fail(error)


class HubSubscription:
    """One subscription's stay in the hub's registry.

    A class rather than an ``asynccontextmanager``: it lives as long as the
    subscription, and a generator-based one would keep a suspended generator,
    its frame and an event-loop registration per idle subscriber.
    """

    __slots__ = ("_hub", "_mailbox", "_max_per_user", "_user_id")

    def __init__(self, hub: EventHub, user_id: UUID, mailbox: Mailbox, max_per_user: int) -> None:
        self._hub = hub
        self._user_id = user_id
        self._mailbox = mailbox
        self._max_per_user = max_per_user

    async def __aenter__(self) -> Mailbox:
        self._hub.join(self._user_id, self._mailbox, self._max_per_user)
        return self._mailbox

    async def __aexit__(self, *exc_info: object) -> None:
        self._hub.leave(self._user_id, self._mailbox)


@contextlib.asynccontextmanager
async def open_event_hub(
    database_url: str, *, broadcast_url: str | None = None, metrics: EventMetrics = NO_EVENT_METRICS
) -> AsyncIterator[EventHub]:
    """The hub on broadcaster over our Postgres backend, or over our Redis backend with the relay feeding it."""
    relay: NotifyRelay | None = None
    if broadcast_url is not None and urlparse(broadcast_url).scheme in REDIS_SCHEMES:
        broadcast = Broadcast(backend=RedisPubSubBackend(broadcast_url, metrics=metrics))
        relay = NotifyRelay(database_url, broadcast.publish, metrics=metrics)
    else:
        broadcast = Broadcast(backend=PostgresNotifyBackend(database_url, metrics=metrics))
    await broadcast.connect()
    hub = EventHub(broadcast, relay=relay, metrics=metrics)
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
