"""What each subscription does: listen for the viewer's change events, re-read, yield what changed.

A change event only says "this row changed" (realtime/change_events.py), so a
subscriber re-reads the row through the same authorised loaders queries use
(``load_jobs``, ``load_characters``, filtered by the viewer). The hub listens
before the first read, so nothing committed after that read is missed. A
``resync`` (events may have been lost) re-reads everything the subscription
shows; rows re-read but unchanged are not sent again. A resync never ends a
subscription: whatever the rows' states (no image yet included), it only
re-reads and sends what differs from what was sent; and a re-read the
database refuses for a while (every subscriber re-reading at once after a
resync, a failover) is tried again rather than ending the subscription.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, Protocol, TypeVar
from uuid import UUID

import asyncpg

from realtime.change_events import CHARACTER, DELETE, JOB, ChangeNotice
from realtime.event_hub import EventHub, TooManySubscriptions
from realtime.mailbox import Delivery, FeedClosed, Mailbox, MailboxOverflow, NoticeFilter
from resolvers.characters import NOT_FOUND_MESSAGE as CHARACTER_NOT_FOUND
from resolvers.characters import load_characters
from resolvers.errors import NotFound, RateLimited, ServiceUnavailable, SubscriberTooSlow
from resolvers.jobs import JOB_NOT_FOUND, load_jobs
from resolvers.viewer import Viewer
from storage import characters, jobs
from storage.characters import Character
from storage.database import acquire
from storage.enums import FINISHED_STATUSES, JobDestination
from storage.errors import StorageUnavailable
from storage.jobs import Job

# A resync re-reads rows changed since the subscription last heard anything,
# widened by this much for transactions in flight and clock skew between hosts.
RESYNC_SLACK = timedelta(minutes=1)
RESYNC_MAX_ROWS = 100
# Per-subscription memory of what was last sent per row, to skip re-sends.
SENT_MEMORY = 1000
# A re-read the database refuses is tried again after this long, doubling up to the maximum.
REREAD_RETRY_SECONDS = 0.1
REREAD_MAX_RETRY_SECONDS = 5.0

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class _Row(Protocol):
    @property
    def id(self) -> UUID: ...


R = TypeVar("R", bound=_Row)


@dataclass(frozen=True, slots=True)
class SubscriptionLimits:
    """How far behind a subscriber may fall before it is ended, and how many one user may hold in this process
    (see realtime/event_hub.py)."""

    max_pending: int = 256
    max_lag_seconds: float = 60.0
    max_per_user: int = 100


class _SentStates(Generic[K]):
    """The last state sent per row, bounded: a forgotten row may be sent once more, never lost."""

    def __init__(self) -> None:
        self._states: OrderedDict[UUID, K] = OrderedDict()

    def is_new(self, row_id: UUID, state: K) -> bool:
        """Whether ``state`` differs from the row's last sent one (a row never sent is new, whatever its state,
        None included); remembers it as sent when it does."""
        states = self._states
        if row_id in states and states[row_id] == state:
            states.move_to_end(row_id)
            return False
        states[row_id] = state
        states.move_to_end(row_id)
        if len(states) > SENT_MEMORY:
            states.popitem(last=False)
        return True


def job_state(job: Job) -> tuple[object, ...]:
    """What a client sees of a job; lease renewals change ``updated_at`` but nothing here."""
    return (job.status, job.provider_status, job.queue_position, job.character_id, job.error, job.seed,
            job.attempts, job.started_at, job.completed_at, job.provider_percent, job.provider_message)


async def job_updates(
    pool: asyncpg.Pool, hub: EventHub, viewer: Viewer, limits: SubscriptionLimits, *, job_id: UUID
) -> AsyncGenerator[Job, None]:
    """The job now, then each change; ends after a finished state, or with NOT_FOUND for a missing or foreign id."""

    def accepts(notice: ChangeNotice) -> bool:
        return notice.kind == JOB and notice.id == job_id

    async with _Listening(hub, viewer, limits, accepts) as mailbox:
        sent: tuple[object, ...] | None = None
        job = await _job(pool, viewer, job_id)
        while True:
            if job_state(job) != sent:
                sent = job_state(job)
                yield job
            if job.status in FINISHED_STATUSES:
                return
            await _next(mailbox)
            job = await _reread(lambda: _job(pool, viewer, job_id), limits)


async def character_image_updates(
    pool: asyncpg.Pool, hub: EventHub, viewer: Viewer, limits: SubscriptionLimits, *, character_id: UUID | None
) -> AsyncGenerator[Character, None]:
    """Each time the character's image changes; with no id, for every character of the viewer."""
    if character_id is None:
        async for character in _all_character_images(pool, hub, viewer, limits):
            yield character
        return
    key = character_id  # narrowed to a UUID for the closure below

    def accepts(notice: ChangeNotice) -> bool:
        return notice.kind == CHARACTER and notice.id == key

    async with _Listening(hub, viewer, limits, accepts) as mailbox:
        shown = (await _character(pool, viewer, key)).image_url
        while True:
            await _next(mailbox)
            character = await _reread(lambda: _character(pool, viewer, key), limits)
            if character.image_url != shown:
                shown = character.image_url
                yield character
            del character  # an idle subscription holds no row (~1 KB each, thousands of subscribers)


async def _all_character_images(
    pool: asyncpg.Pool, hub: EventHub, viewer: Viewer, limits: SubscriptionLimits
) -> AsyncGenerator[Character, None]:
    def accepts(notice: ChangeNotice) -> bool:
        return notice.kind == CHARACTER and notice.op != DELETE

    async def changed_since(since: datetime) -> list[Character]:
        async with acquire(pool) as connection:
            return await characters.list_changed_since(
                connection, user_id=viewer.user_id, since=since, limit=RESYNC_MAX_ROWS
            )

    async for character in _row_updates(
        hub, viewer, limits, accepts,
        load=lambda ids: load_characters(pool, viewer, ids), changed_since=changed_since,
        state=lambda character: character.image_url,
    ):
        yield character


async def portrait_job_updates(
    pool: asyncpg.Pool, hub: EventHub, viewer: Viewer, limits: SubscriptionLimits
) -> AsyncGenerator[Job, None]:
    """Every character-portrait job of the viewer as it changes (what the seed's useCharacterImageUpdates watches)."""

    def accepts(notice: ChangeNotice) -> bool:
        return notice.kind == JOB and notice.destination == JobDestination.CHARACTER_PORTRAIT

    async def changed_since(since: datetime) -> list[Job]:
        async with acquire(pool) as connection:
            return await jobs.list_changed_since(
                connection, user_id=viewer.user_id, since=since, destination=JobDestination.CHARACTER_PORTRAIT,
                limit=RESYNC_MAX_ROWS,
            )

    async for job in _row_updates(
        hub, viewer, limits, accepts, load=lambda ids: load_jobs(pool, viewer, ids), changed_since=changed_since,
        state=job_state,
    ):
        yield job


async def _row_updates(
    hub: EventHub,
    viewer: Viewer,
    limits: SubscriptionLimits,
    accepts: NoticeFilter,
    *,
    load: Callable[[list[UUID]], Awaitable[Sequence[R | None]]],
    changed_since: Callable[[datetime], Awaitable[list[R]]],
    state: Callable[[R], Hashable],
) -> AsyncGenerator[R, None]:
    """Rows the notices name, re-read with ``load``; after a resync, also those ``changed_since`` the last event.

    A row whose ``state`` was already sent is not sent again; a row gone (deleted, or no longer the
    viewer's) is skipped.
    """

    async def read(delivery: Delivery, since: datetime) -> list[R]:
        changed: list[R] = []
        if delivery.resync:
            changed = await changed_since(since - RESYNC_SLACK)
            changed.reverse()  # oldest change first, as events would have come
        reread = {row.id for row in changed}
        named = [notice.id for notice in delivery.notices if notice.id not in reread]
        if named:
            changed.extend(row for row in await load(named) if row is not None)
        return changed

    async with _Listening(hub, viewer, limits, accepts) as mailbox:
        sent: _SentStates[Hashable] = _SentStates()
        since = datetime.now(UTC)
        while True:
            delivery = await _next(mailbox)
            heard_at = datetime.now(UTC)
            changed = await _reread(functools.partial(read, delivery, since), limits)
            since = heard_at
            for row in changed:
                if sent.is_new(row.id, state(row)):
                    yield row


class _Listening:
    """The hub's subscription, its failures to start as client errors (RATE_LIMITED over the per-user cap).

    A class, not an ``asynccontextmanager``: it lives as long as the
    subscription, and a generator would keep a frame per idle subscriber.
    """

    __slots__ = ("_subscription",)

    def __init__(self, hub: EventHub, viewer: Viewer, limits: SubscriptionLimits, accepts: NoticeFilter) -> None:
        self._subscription = hub.subscribe(
            viewer.user_id, accepts=accepts, max_pending=limits.max_pending, max_lag_seconds=limits.max_lag_seconds,
            max_per_user=limits.max_per_user,
        )

    async def __aenter__(self) -> Mailbox:
        try:
            return await self._subscription.__aenter__()
        except FeedClosed as error:
            raise ServiceUnavailable(f"subscription ended: {error}") from None
        except TooManySubscriptions as error:
            raise RateLimited(
                f"{error}; end one of your subscriptions to start another", limit=error.limit
            ) from None

    async def __aexit__(self, *exc_info: object) -> None:
        await self._subscription.__aexit__(*exc_info)


async def _next(mailbox: Mailbox) -> Delivery:
    """The mailbox's next delivery, its endings as client errors."""
    try:
        return await mailbox.next()
    except MailboxOverflow as error:
        raise SubscriberTooSlow(f"subscription ended: {error}; subscribe again to resume") from None
    except FeedClosed as error:
        raise ServiceUnavailable(f"subscription ended: {error}") from None


async def _reread(read: Callable[[], Awaitable[T]], limits: SubscriptionLimits) -> T:
    """``read``, tried again while the database is unavailable, so a failover or a pool drained by every
    subscriber re-reading at once (a resync) does not end the subscription; it ends only when the database
    stays away longer than changes may wait (``max_lag_seconds``)."""
    deadline = time.monotonic() + limits.max_lag_seconds
    delay = REREAD_RETRY_SECONDS
    while True:
        try:
            return await read()
        except StorageUnavailable:
            pause = delay * random.uniform(0.5, 1.5)  # jittered, so retries do not come back in step
            if time.monotonic() + pause > deadline:
                raise
            await asyncio.sleep(pause)
            delay = min(delay * 2, REREAD_MAX_RETRY_SECONDS)


async def _job(pool: asyncpg.Pool, viewer: Viewer, job_id: UUID) -> Job:
    [job] = await load_jobs(pool, viewer, [job_id])
    if job is None:
        raise NotFound(JOB_NOT_FOUND)
    return job


async def _character(pool: asyncpg.Pool, viewer: Viewer, character_id: UUID) -> Character:
    [character] = await load_characters(pool, viewer, [character_id])
    if character is None:
        raise NotFound(CHARACTER_NOT_FOUND)
    return character
