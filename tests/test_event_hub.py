"""The hub's mailboxes: coalescing, bounds, endings; its router; and a slow subscriber on the real hub."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest

from realtime.change_events import EVENTS_CHANNEL, JOB, RESYNC, ChangeNotice
from realtime.event_hub import RECENT_EVENTS, EventHub, HubSubscription, TooManySubscriptions, open_event_hub
from realtime.mailbox import FeedClosed, Mailbox, MailboxOverflow
from realtime.postgres_backend import APPLICATION_NAME as LISTEN_APPLICATION_NAME
from resolvers import subscriptions
from resolvers.errors import SubscriberTooSlow
from resolvers.subscriptions import SubscriptionLimits
from resolvers.viewer import Viewer
from tests.realtime_support import insert_character, set_image, terminate


def notice(row: uuid.UUID, *, kind: str = JOB, status: str = "queued", user: uuid.UUID | None = None) -> ChangeNotice:
    return ChangeNotice(user_id=user or uuid.uuid4(), kind=kind, op="update", id=row, status=status)


def everything(_: ChangeNotice) -> bool:
    return True


async def test_changes_to_one_row_coalesce_into_its_latest_notice() -> None:
    mailbox = Mailbox(everything, max_pending=10, max_lag_seconds=60)
    row, other = uuid.uuid4(), uuid.uuid4()
    for status in ("queued", "processing", "completed"):
        mailbox.offer(notice(row, status=status))
    mailbox.offer(notice(other))
    delivery = await mailbox.next()
    assert [(n.id, n.status) for n in delivery.notices] == [(row, "completed"), (other, "queued")]
    assert not delivery.resync


async def test_a_filter_keeps_other_rows_out() -> None:
    wanted = uuid.uuid4()
    mailbox = Mailbox(lambda n: n.id == wanted, max_pending=10, max_lag_seconds=60)
    mailbox.offer(notice(uuid.uuid4()))
    mailbox.offer(notice(wanted))
    assert [n.id for n in (await mailbox.next()).notices] == [wanted]


async def test_next_waits_until_something_arrives() -> None:
    mailbox = Mailbox(everything, max_pending=10, max_lag_seconds=60)
    waiting = asyncio.ensure_future(mailbox.next())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    mailbox.resync()
    delivery = await asyncio.wait_for(waiting, 1)
    assert delivery.resync and delivery.notices == ()


async def test_too_many_distinct_rows_waiting_ends_the_mailbox() -> None:
    # given a mailbox that may hold 3 rows, and a consumer that does not take them
    mailbox = Mailbox(everything, max_pending=3, max_lag_seconds=60)
    for _ in range(3):
        mailbox.offer(notice(uuid.uuid4()))
    # when a 4th distinct row arrives
    mailbox.offer(notice(uuid.uuid4()))
    # then the mailbox is ended, and holds nothing more
    with pytest.raises(MailboxOverflow):
        await mailbox.next()
    mailbox.offer(notice(uuid.uuid4()))
    with pytest.raises(MailboxOverflow):
        await mailbox.next()


async def test_rows_left_waiting_too_long_end_the_mailbox() -> None:
    mailbox = Mailbox(everything, max_pending=100, max_lag_seconds=0.05)
    mailbox.offer(notice(uuid.uuid4()))
    await asyncio.sleep(0.1)
    mailbox.offer(notice(uuid.uuid4()))
    with pytest.raises(MailboxOverflow):
        await mailbox.next()


async def test_the_same_row_again_never_ends_a_mailbox() -> None:
    # one job's updates coalesce, so a subscriber to one job can never fall behind
    mailbox = Mailbox(everything, max_pending=1, max_lag_seconds=0.01)
    row = uuid.uuid4()
    for _ in range(1000):
        mailbox.offer(notice(row))
    await asyncio.sleep(0.05)
    mailbox.offer(notice(row, status="completed"))
    assert [(n.id, n.status) for n in (await mailbox.next()).notices] == [(row, "completed")]


@pytest.fixture
async def hub(database_url: str) -> AsyncIterator[EventHub]:
    async with open_event_hub(database_url) as hub:
        yield hub


async def test_a_subscriber_that_falls_behind_is_ended_with_an_error(
    hub: EventHub, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given alice's all-characters subscription that may fall 3 rows behind, and 5 characters of hers
    viewer = Viewer(user_id=alice, expires_at=datetime.now(UTC) + timedelta(hours=1))
    characters = [await insert_character(pool, alice) for _ in range(5)]
    updates = subscriptions.character_image_updates(
        pool, hub, viewer, SubscriptionLimits(max_pending=3, max_lag_seconds=60), character_id=None
    )
    first = asyncio.ensure_future(updates.__anext__())
    await set_image(pool, characters[0], "https://example.com/0.png")
    assert (await asyncio.wait_for(first, 10)).id == characters[0]

    # when the client stops reading while all five images change
    for number, character in enumerate(characters):
        await set_image(pool, character, f"https://example.com/again-{number}.png")
    await asyncio.sleep(0.5)

    # then, when it reads again, its subscription ends with SUBSCRIBER_TOO_SLOW instead of buffering without bound
    with pytest.raises(SubscriberTooSlow) as ended:
        while True:
            await asyncio.wait_for(updates.__anext__(), 10)
    assert ended.value.extensions["code"] == "SUBSCRIBER_TOO_SLOW"
    await updates.aclose()
    assert hub.subscriber_count == 0


async def test_one_job_subscriber_that_reads_late_gets_only_the_latest_state(
    hub: EventHub, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a subscription to one queued job
    viewer = Viewer(user_id=alice, expires_at=datetime.now(UTC) + timedelta(hours=1))
    job_id = await pool.fetchval(
        "INSERT INTO jobs (user_id, destination, model_key, prompt) "
        "SELECT $1, 'workspace', model_key, 'p' FROM image_models WHERE is_default RETURNING id",
        alice,
    )
    updates = subscriptions.job_updates(pool, hub, viewer, SubscriptionLimits(max_pending=1), job_id=job_id)
    assert (await updates.__anext__()).status == "queued"

    # when the job changes 20 times before the client reads again
    for position in range(20):
        await pool.execute("UPDATE jobs SET status = 'processing', queue_position = $2 WHERE id = $1", job_id, position)
    await pool.execute("UPDATE jobs SET status = 'completed' WHERE id = $1", job_id)
    await asyncio.sleep(0.3)

    # then it is sent the latest state once, and the stream ends
    rest = [job async for job in updates]
    assert [job.status for job in rest] == ["completed"]


async def test_closing_the_hub_ends_its_subscriptions(database_url: str, pool: asyncpg.Pool, alice: uuid.UUID) -> None:
    async with open_event_hub(database_url) as hub, hub.subscribe(
        alice, accepts=everything, max_pending=10, max_lag_seconds=60, max_per_user=100
    ) as mailbox:
        waiting = asyncio.ensure_future(mailbox.next())
        await asyncio.sleep(0.05)
        await hub.close()
        with pytest.raises(FeedClosed):
            await waiting


async def test_the_registry_is_per_user_and_forgets_a_user_with_their_last_subscriber(
    hub: EventHub, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    async with (
        hub.subscribe(alice, accepts=everything, max_pending=10, max_lag_seconds=60, max_per_user=100),
        hub.subscribe(alice, accepts=everything, max_pending=10, max_lag_seconds=60, max_per_user=100),
        hub.subscribe(bob, accepts=everything, max_pending=10, max_lag_seconds=60, max_per_user=100),
    ):
        assert hub.subscriber_count == 3
        assert hub.user_count == 2
    assert hub.subscriber_count == 0
    assert hub.user_count == 0
    # and a user can come back at once
    async with hub.subscribe(alice, accepts=everything, max_pending=10, max_lag_seconds=60, max_per_user=100):
        assert hub.user_count == 1


async def test_a_users_subscriptions_are_capped_exactly_and_released_on_every_exit(
    hub: EventHub, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    def subscription(user: uuid.UUID) -> HubSubscription:
        return hub.subscribe(user, accepts=everything, max_pending=10, max_lag_seconds=60, max_per_user=2)

    # given alice at her cap of two
    async with subscription(alice), subscription(alice):
        # when she takes one more, then it is refused with the limit, and bob's are his own
        with pytest.raises(TooManySubscriptions) as refused:
            await subscription(alice).__aenter__()
        assert refused.value.limit == 2
        async with subscription(bob):
            assert hub.subscriber_count == 3
    # and when hers end, on an error too, they are released
    with pytest.raises(ValueError):
        async with subscription(alice), subscription(alice):
            raise ValueError("the subscription failed")
    assert hub.subscriber_count == 0


async def test_the_router_hands_an_event_to_its_owners_mailboxes_only_and_a_resync_to_all(
    hub: EventHub, pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    # given two subscriptions of alice's and one of bob's, on the hub's one broadcaster subscription
    async with (
        hub.subscribe(alice, accepts=everything, max_pending=10, max_lag_seconds=60, max_per_user=100) as first,
        hub.subscribe(alice, accepts=everything, max_pending=10, max_lag_seconds=60, max_per_user=100) as second,
        hub.subscribe(bob, accepts=everything, max_pending=10, max_lag_seconds=60, max_per_user=100) as bobs,
    ):
        # when alice's character's image changes
        character = await insert_character(pool, alice)
        await set_image(pool, character, "https://example.com/alice.png")
        # then both of alice's mailboxes hear it
        for mailbox in (first, second):
            delivery = await asyncio.wait_for(mailbox.next(), 10)
            assert [(n.user_id, n.id) for n in delivery.notices] == [(alice, character)]
        # when a resync goes out (NOTIFY, as any process or an operator may send it)
        await pool.execute("SELECT pg_notify($1, $2)", EVENTS_CHANNEL, RESYNC)
        # then every mailbox, bob's too, is told to re-read; and bob's got nothing of alice's before it
        for mailbox in (first, second, bobs):
            delivery = await asyncio.wait_for(mailbox.next(), 10)
            assert delivery.resync and delivery.notices == ()


async def test_the_router_keeps_the_first_copy_of_each_event_and_forgets_old_ids(
    hub: EventHub, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a real change event as the trigger sent it (two Redis relays would each publish it)
    character = await insert_character(pool, alice)
    async with hub.subscribe(
        alice, accepts=everything, max_pending=10, max_lag_seconds=60, max_per_user=100
    ) as mailbox:
        await set_image(pool, character, "https://example.com/once.png")
        [heard] = (await asyncio.wait_for(mailbox.next(), 10)).notices
    copy = notice_text(alice, character, seq=heard.seq)

    async with hub.subscribe(alice, accepts=everything, max_pending=RECENT_EVENTS + 10,
                             max_lag_seconds=60, max_per_user=100) as mailbox:

        async def routed(*messages: str) -> list[tuple[uuid.UUID, int]]:
            """Route ``messages`` then a marker event of another row; what the mailbox then holds."""
            marker = uuid.uuid4()
            for message in messages:
                hub.route(message)
            hub.route(notice_text(alice, marker, seq=0))
            notices = (await asyncio.wait_for(mailbox.next(), 1)).notices
            return [(n.id, n.seq) for n in notices if n.id != marker]

        # when the same event comes again (the other relay's copy), then it is dropped
        assert await routed(copy) == []
        # when an event of the same row comes with a new id (a second, real change), then it is delivered once
        newer = notice_text(alice, character, seq=heard.seq + 1)
        assert await routed(newer) == [(character, heard.seq + 1)]
        assert await routed(newer) == []
        # and an event without an id is never taken for a copy
        anonymous = notice_text(alice, character, seq=0)
        assert await routed(anonymous) == [(character, 0)]
        assert await routed(anonymous) == [(character, 0)]

        # and the window is bounded: once RECENT_EVENTS others came, an old id counts as new again
        for offset in range(RECENT_EVENTS):
            hub.route(notice_text(alice, uuid.uuid4(), seq=10**9 + offset))
        await asyncio.wait_for(mailbox.next(), 1)
        assert await routed(newer) == [(character, heard.seq + 1)]


def notice_text(user: uuid.UUID, row: uuid.UUID, *, seq: int) -> str:
    """A character event as the trigger writes it; ``seq`` 0 leaves the id out."""
    payload: dict[str, object] = {"user": str(user), "kind": "character", "op": "update", "id": str(row), "at": 1}
    if seq:
        payload["seq"] = seq
    return orjson.dumps(payload).decode()


async def test_a_resync_after_a_lost_connection_rereads_what_changed_unheard(
    hub: EventHub, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given alice's all-characters subscription
    viewer = Viewer(user_id=alice, expires_at=datetime.now(UTC) + timedelta(hours=1))
    character = await insert_character(pool, alice)
    updates = subscriptions.character_image_updates(pool, hub, viewer, SubscriptionLimits(), character_id=None)
    pending = asyncio.ensure_future(updates.__anext__())
    await asyncio.sleep(0.2)

    # when an image changes without any event (its trigger off inside the transaction, so no one else notices)
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("ALTER TABLE characters DISABLE TRIGGER characters_event_update")
        await connection.execute(
            "UPDATE characters SET image_url = 'https://example.com/unheard.png' WHERE id = $1", character
        )
        await connection.execute("ALTER TABLE characters ENABLE TRIGGER characters_event_update")
    await asyncio.sleep(0.2)
    assert not pending.done()
    # and then the hub's LISTEN connection is killed
    assert await terminate(pool, LISTEN_APPLICATION_NAME) >= 1

    # then after reconnecting, the resync makes the subscriber re-read and send the change it never heard of
    changed = await asyncio.wait_for(pending, 10)
    assert (changed.id, changed.image_url) == (character, "https://example.com/unheard.png")
    await updates.aclose()
