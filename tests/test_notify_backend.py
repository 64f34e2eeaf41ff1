"""Our broadcaster backends (PostgreSQL LISTEN/NOTIFY, Redis pub/sub) and the relay, on a real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import orjson
import pytest
import redis.asyncio as redis
from broadcaster import Broadcast, Event

from realtime.change_events import EVENTS_CHANNEL, RESYNC, ChangeNotice, Resync, parse_message
from realtime.event_hub import open_event_hub
from realtime.mailbox import Mailbox
from realtime.notify_relay import NotifyRelay
from realtime.postgres_backend import PostgresNotifyBackend
from realtime.redis_backend import RedisPubSubBackend, RedisUnavailable
from storage.errors import StorageUnavailable
from storage.relay_slots import count_held
from tests.realtime_support import (
    REDIS_URL,
    SilentableProxy,
    dsn_through,
    insert_character,
    kill_redis_pubsub_connections,
    needs_redis,
    postgres_target,
    set_image,
    set_image_in,
    terminate,
)
from tests.support import free_port


async def next_event(backend: PostgresNotifyBackend | RedisPubSubBackend, timeout: float = 10) -> Event:
    return await asyncio.wait_for(backend.next_published(), timeout)


def change_event(user: uuid.UUID) -> str:
    return orjson.dumps({"user": str(user), "kind": "job", "op": "update", "id": str(uuid.uuid4())}).decode()


@pytest.fixture
async def backend(database_url: str) -> AsyncIterator[PostgresNotifyBackend]:
    name = f"test-listen-{uuid.uuid4().hex[:8]}"
    backend = PostgresNotifyBackend(database_url, application_name=name, health_check_seconds=0.5)
    await backend.connect()
    backend.application_name = name  # type: ignore[attr-defined]  # for terminate() in the tests
    try:
        yield backend
    finally:
        await backend.disconnect()


async def test_triggers_send_small_events_naming_the_row_on_the_one_channel(
    backend: PostgresNotifyBackend, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given the backend subscribed to the events channel
    await backend.subscribe(EVENTS_CHANNEL)
    character = await insert_character(pool, alice)

    # when the character's image changes
    await set_image(pool, character, "https://example.com/a.png")
    event = await next_event(backend)

    # then the backend hands over a small event naming the owner and the row, carrying none of it
    assert event.channel == EVENTS_CHANNEL
    payload = orjson.loads(event.message)
    assert set(payload) == {"user", "kind", "op", "id", "at", "seq"}
    assert (payload["kind"], payload["op"], payload["id"]) == ("character", "update", str(character))
    assert len(event.message) < 300
    notice = parse_message(event.message)
    assert isinstance(notice, ChangeNotice) and notice.user_id == alice and notice.id == character
    # and each event has an id of its own, increasing, even when the payload would otherwise repeat
    await set_image(pool, character, "https://example.com/a.png?again")
    again = parse_message((await next_event(backend)).message)
    assert isinstance(again, ChangeNotice) and again.seq > notice.seq > 0


async def test_an_event_is_heard_only_after_commit(
    backend: PostgresNotifyBackend, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    await backend.subscribe(EVENTS_CHANNEL)
    character = await insert_character(pool, alice)
    async with pool.acquire() as connection:
        transaction = connection.transaction()
        await transaction.start()
        await set_image_in(connection, character, "https://example.com/x.png")
        # while the change is uncommitted, nothing is heard
        waiting = asyncio.ensure_future(backend.next_published())
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await transaction.commit()
    event = await asyncio.wait_for(waiting, 10)
    assert orjson.loads(event.message)["id"] == str(character)


async def test_job_events_name_status_and_destination_and_skip_lease_renewals(
    backend: PostgresNotifyBackend, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    await backend.subscribe(EVENTS_CHANNEL)
    job_id = await pool.fetchval(
        "INSERT INTO jobs (user_id, destination, model_key, prompt) "
        "SELECT $1, 'character_portrait', model_key, 'p' FROM image_models WHERE is_default RETURNING id",
        alice,
    )
    inserted = orjson.loads((await next_event(backend)).message)
    # a lease renewal (no visible change) sends nothing; the next event is the status change
    await pool.execute("UPDATE jobs SET locked_until = now() + interval '1 minute' WHERE id = $1", job_id)
    await pool.execute("UPDATE jobs SET status = 'processing' WHERE id = $1", job_id)
    processing = orjson.loads((await next_event(backend)).message)
    assert (inserted["op"], inserted["status"], inserted["destination"]) == ("insert", "queued", "character_portrait")
    assert (processing["op"], processing["status"]) == ("update", "processing")
    assert processing["at"] >= inserted["at"]


async def test_concurrent_publishes_all_arrive(backend: PostgresNotifyBackend, alice: uuid.UUID) -> None:
    # given (encode/broadcaster#22: the package's backend fails concurrent publishes on one connection)
    await backend.subscribe(EVENTS_CHANNEL)
    messages = [change_event(alice) for _ in range(50)]
    # when 50 publishes run at once
    await asyncio.gather(*(backend.publish(EVENTS_CHANNEL, message) for message in messages))
    # then every one is delivered
    received = {(await next_event(backend)).message for _ in messages}
    assert received == set(messages)


async def test_the_backend_carries_its_one_channel_only(backend: PostgresNotifyBackend, alice: uuid.UUID) -> None:
    with pytest.raises(ValueError):
        await backend.subscribe("another")
    with pytest.raises(ValueError):
        await backend.publish("another", change_event(alice))


async def test_after_the_connection_is_killed_it_listens_again_and_resyncs(
    backend: PostgresNotifyBackend, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a subscribed backend
    await backend.subscribe(EVENTS_CHANNEL)
    character = await insert_character(pool, alice)

    # when the LISTEN connection is terminated, and a change commits while it is gone
    async with pool.acquire() as connection, connection.transaction():
        assert await terminate(pool, backend.application_name) == 1  # type: ignore[attr-defined]  # set by the backend fixture
        await set_image_in(connection, character, "https://example.com/gap.png")

    # then next_published does not raise: it yields a resync once the connection is back
    resync = await next_event(backend)
    assert resync.channel == EVENTS_CHANNEL
    assert isinstance(parse_message(resync.message), Resync)
    # and events flow again on the new connection
    await set_image(pool, character, "https://example.com/after.png")
    after = await next_event(backend)
    assert orjson.loads(after.message)["id"] == str(character)


async def test_a_silently_dead_connection_is_noticed_by_the_health_check(
    database_url: str, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a backend whose LISTEN connection goes through a hop that can go silent
    async with SilentableProxy(postgres_target(database_url)) as proxy:
        backend = PostgresNotifyBackend(dsn_through(database_url, proxy.port), health_check_seconds=0.5)
        await backend.connect()
        try:
            await backend.subscribe(EVENTS_CHANNEL)
            # when the network goes silent (no FIN, no RST: the server is not told)
            proxy.silence()
            # then the health check's SELECT 1 times out, the backend reconnects (through a fresh hop) and resyncs
            assert (await next_event(backend, timeout=30)).message == RESYNC
            # and events flow again
            character = await insert_character(pool, alice)
            await set_image(pool, character, "https://example.com/after-silence.png")
            assert orjson.loads((await next_event(backend)).message)["id"] == str(character)
        finally:
            await backend.disconnect()


async def test_an_unreachable_database_at_start_does_not_raise(database_url: str, alice: uuid.UUID) -> None:
    # given a server address nobody listens on
    backend = PostgresNotifyBackend(f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    # when it connects, it keeps trying in the background; publishing says the service is unavailable
    await backend.connect()
    try:
        with pytest.raises(StorageUnavailable):
            await backend.publish(EVENTS_CHANNEL, change_event(alice))
        waiting = asyncio.ensure_future(backend.next_published())
        await asyncio.sleep(0.5)
        assert not waiting.done()  # waits, never raises
        waiting.cancel()
    finally:
        await backend.disconnect()


async def test_broadcast_over_our_backend_delivers_to_every_subscriber_of_the_channel(
    database_url: str, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given broadcaster's Broadcast on our backend, with two subscribers
    broadcast = Broadcast(backend=PostgresNotifyBackend(database_url))
    await broadcast.connect()
    try:
        async with broadcast.subscribe(EVENTS_CHANNEL) as one, broadcast.subscribe(EVENTS_CHANNEL) as two:
            character = await insert_character(pool, alice)
            await set_image(pool, character, "https://example.com/both.png")
            first = await asyncio.wait_for(one.get(), 10)
            second = await asyncio.wait_for(two.get(), 10)
        assert first == second
        assert orjson.loads(first.message)["id"] == str(character)
    finally:
        await broadcast.disconnect()


async def test_two_relays_publish_every_event_and_a_third_takes_a_freed_slot_without_a_resync(
    database_url: str, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given three relays (as three server processes in Redis mode), each publishing into its own list
    published: dict[str, list[str]] = {"first": [], "second": [], "third": []}

    def recorder(name: str) -> Callable[[str, str], Awaitable[None]]:
        async def publish(channel: str, message: str) -> None:
            assert channel == EVENTS_CHANNEL
            published[name].append(message)
        return publish

    first, second, third = (
        NotifyRelay(database_url, recorder(name), slot_retry_seconds=0.1) for name in ("first", "second", "third")
    )
    character = await insert_character(pool, alice)

    def changes_of(name: str) -> list[str]:
        return [orjson.loads(message)["seq"] for message in published[name] if message != RESYNC]

    try:
        for relay in (first, second, third):
            await relay.start()
        # then the first two hold the two slots and the third waits; only the first, alone then, resyncs
        assert (first.slot, second.slot, third.slot) == (1, 2, None)
        await wait_until(lambda: published["first"] == [RESYNC])
        await set_image(pool, character, "https://example.com/one.png")
        await wait_until(lambda: len(changes_of("first")) == 1 and len(changes_of("second")) == 1)
        # and both publish the very same event (the hubs keep one copy)
        assert published["first"][-1] == published["second"][-1]
        assert orjson.loads(published["first"][-1])["id"] == str(character)
        assert published["second"][0] != RESYNC
        assert published["third"] == []

        # when the leader goes, and changes keep coming
        await first.close()
        await set_image(pool, character, "https://example.com/two.png")
        await wait_until(lambda: third.is_relaying)
        await set_image(pool, character, "https://example.com/three.png")

        # then the standby published every one of them, and the third took the freed slot without a resync:
        # the second had relayed all along, so nothing was lost
        await wait_until(
            lambda: len(changes_of("second")) == 3 and changes_of("third")[-1:] == changes_of("second")[-1:]
        )
        assert third.slot == 1
        assert RESYNC not in published["third"]
        assert set(changes_of("third")) <= set(changes_of("second"))

        # when every relay goes and one comes back, it was alone: it announces a resync first
        await second.close()
        await third.close()
        fourth = NotifyRelay(database_url, recorder("first"), slot_retry_seconds=0.1)
        published["first"].clear()
        await fourth.start()
        try:
            assert fourth.slot == 1
            await wait_until(lambda: published["first"] == [RESYNC])
        finally:
            await fourth.close()
    finally:
        for relay in (first, second, third):
            await relay.close()


async def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


async def settle(pool: asyncpg.Pool, user: uuid.UUID, *mailboxes: Mailbox) -> uuid.UUID:
    """Let what came before pass (a relay's resync as it takes the lead): a fresh change, taken once it arrives."""
    marker = await insert_character(pool, user, "https://example.com/marker.png")
    for mailbox in mailboxes:
        while marker not in {notice.id for notice in (await asyncio.wait_for(mailbox.next(), 10)).notices}:
            pass
    return marker


def everything(notice: ChangeNotice) -> bool:
    return True


@needs_redis
async def test_redis_fan_out_reaches_every_process_through_two_relays(
    database_url: str, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given two hubs on our Redis backend, as two server processes would run, and a bare Redis subscriber
    character = await insert_character(pool, alice)
    watcher = redis.Redis.from_url(REDIS_URL).pubsub()
    await watcher.subscribe(EVENTS_CHANNEL)
    async with (
        open_event_hub(database_url, broadcast_url=REDIS_URL) as first,
        open_event_hub(database_url, broadcast_url=REDIS_URL) as second,
        first.subscribe(alice, accepts=everything, max_pending=10, max_lag_seconds=60, max_per_user=100) as one,
        second.subscribe(alice, accepts=everything, max_pending=10, max_lag_seconds=60, max_per_user=100) as two,
    ):
        # then both relay the database's events to Redis, a leader and a hot standby
        assert sorted(hub.relay.slot or 0 for hub in (first, second) if hub.relay is not None) == [1, 2]
        await settle(pool, alice, one, two)

        # when the character's image changes
        await set_image(pool, character, "https://example.com/redis.png")

        # then both processes' subscribers hear it
        for mailbox in (one, two):
            delivery = await asyncio.wait_for(mailbox.next(), 10)
            assert [notice.id for notice in delivery.notices] == [character]
        # and it went through Redis twice, the very same message from each relay (each hub keeps one)
        copies = await messages_naming(watcher, character, count=2)
        assert copies[0] == copies[1]
    await watcher.aclose()


async def messages_naming(watcher: redis.client.PubSub, row: uuid.UUID, *, count: int) -> list[str]:
    """The next ``count`` messages on the watcher's channel that name ``row``."""
    found: list[str] = []
    async with asyncio.timeout(10):
        while len(found) < count:
            message = await watcher.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None and str(row) in (text := message["data"].decode()):
                found.append(text)
    return found


@needs_redis
async def test_redis_fan_out_survives_a_killed_pubsub_connection(
    database_url: str, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a hub on Redis with a live subscription
    character = await insert_character(pool, alice)
    async with (
        open_event_hub(database_url, broadcast_url=REDIS_URL) as hub,
        hub.subscribe(alice, accepts=everything, max_pending=10, max_lag_seconds=60, max_per_user=100) as mailbox,
    ):
        await settle(pool, alice, mailbox)

        # when Redis drops every pub/sub connection (as a restart would)
        assert await kill_redis_pubsub_connections() >= 1

        # then the subscriber is told to resync (what was published meanwhile is lost)
        delivery = await asyncio.wait_for(mailbox.next(), 10)
        assert delivery.resync
        # and later changes reach it again
        await set_image(pool, character, "https://example.com/after-kill.png")
        delivery = await asyncio.wait_for(mailbox.next(), 10)
        assert [notice.id for notice in delivery.notices] == [character]


@needs_redis
async def test_a_graceful_stop_in_redis_mode_reports_no_lost_connection(
    database_url: str, pool: asyncpg.Pool, alice: uuid.UUID, caplog: pytest.LogCaptureFixture
) -> None:
    # given a hub on Redis that has carried an event
    async with open_event_hub(database_url, broadcast_url=REDIS_URL) as hub:
        async with hub.subscribe(
            alice, accepts=everything, max_pending=10, max_lag_seconds=60, max_per_user=100
        ) as mailbox:
            await settle(pool, alice, mailbox)
        # when it stops
        caplog.clear()
        caplog.set_level(logging.INFO, logger="realtime")
    # then nothing warns (no "connection lost ... reconnecting"), and the stop says what it closed
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert any("Redis pub/sub closed" in record.getMessage() for record in caplog.records)


@needs_redis
async def test_redis_unreachable_at_start_then_reachable_resyncs_and_delivers() -> None:
    # given a Redis backend pointed at a port where nothing listens yet
    port = free_port()
    backend = RedisPubSubBackend(f"redis://127.0.0.1:{port}/0")
    await backend.connect()  # does not raise: it keeps trying in the background
    try:
        await backend.subscribe(EVENTS_CHANNEL)
        with pytest.raises(RedisUnavailable):
            await backend.publish(EVENTS_CHANNEL, "early")
        # when Redis becomes reachable there
        async with SilentableProxy(("127.0.0.1", 6379), port=port):
            # then the channel is resynced once subscribed (subscribers that joined meanwhile re-read)
            assert await next_event(backend, timeout=30) == Event(EVENTS_CHANNEL, RESYNC)
            # and what is published from now on arrives
            await backend.publish(EVENTS_CHANNEL, "hello")
            assert await next_event(backend) == Event(EVENTS_CHANNEL, "hello")
    finally:
        await backend.disconnect()


@needs_redis
async def test_a_silently_dead_redis_connection_is_noticed_by_the_health_check() -> None:
    # given a Redis backend whose pub/sub connection goes through a hop that can go silent
    async with SilentableProxy(("127.0.0.1", 6379)) as proxy:
        backend = RedisPubSubBackend(f"redis://127.0.0.1:{proxy.port}/0", health_check_seconds=0.5)
        await backend.connect()
        publisher = redis.Redis.from_url(REDIS_URL)  # straight to Redis, beside the hop
        try:
            await backend.subscribe(EVENTS_CHANNEL)
            await publisher.publish(EVENTS_CHANNEL, "before")
            assert await next_event(backend) == Event(EVENTS_CHANNEL, "before")
            # when the network goes silent
            proxy.silence()
            # then an unanswered PING gives it away: the backend reconnects and resyncs the channel
            assert await next_event(backend, timeout=30) == Event(EVENTS_CHANNEL, RESYNC)
            await publisher.publish(EVENTS_CHANNEL, "after")
            assert await next_event(backend) == Event(EVENTS_CHANNEL, "after")
        finally:
            await publisher.aclose()
            await backend.disconnect()


async def relay_slots_held(pool: asyncpg.Pool) -> int:
    """Relay slots held in this database now (closed sessions free theirs a moment after the close returns)."""
    async with pool.acquire() as connection:
        return await count_held(connection)


async def start_two_relays_together(database_url: str, pool: asyncpg.Pool) -> dict[str, list[str]]:
    """One round: both relays started at once, run until one has published a resync; what each published."""
    published: dict[str, list[str]] = {"a": [], "b": []}

    def recorder(name: str) -> Callable[[str, str], Awaitable[None]]:
        async def publish(channel: str, message: str) -> None:
            published[name].append(message)
        return publish

    deadline = asyncio.get_running_loop().time() + 10
    while await relay_slots_held(pool):  # the last round's sessions are gone
        assert asyncio.get_running_loop().time() < deadline, "a relay slot stayed held"
        await asyncio.sleep(0.02)
    a = NotifyRelay(database_url, recorder("a"), slot_retry_seconds=0.1)
    b = NotifyRelay(database_url, recorder("b"), slot_retry_seconds=0.1)
    try:
        await asyncio.gather(a.start(), b.start())
        assert {a.slot, b.slot} == {1, 2}
        # start() queues a resync and the publishing task sends it: "never held" means neither resynced
        await wait_until(lambda: RESYNC in published["a"] + published["b"])
    finally:
        await a.close()
        await b.close()
    return published


async def test_of_two_relays_started_together_one_always_resyncs(database_url: str, pool: asyncpg.Pool) -> None:
    # Each relay LISTENs before it takes a slot; if each took its slot before the other counted peers,
    # both would see a peer and neither would resync for the time before either LISTENed.
    for _ in range(20):
        # when two relays start at the same moment, then one of them announced a resync
        published = await start_two_relays_together(database_url, pool)
        assert RESYNC in published["a"] + published["b"]


async def test_after_redis_refuses_the_resync_goes_out_once_it_answers_without_another_event(
    database_url: str, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a relay whose Redis refuses the next three publishes, then answers again
    published: list[str] = []
    refusals_left = 0

    async def publish(channel: str, message: str) -> None:
        nonlocal refusals_left
        if refusals_left:
            refusals_left -= 1
            raise RedisUnavailable("connection refused (test)")
        published.append(message)

    relay = NotifyRelay(database_url, publish, slot_retry_seconds=0.1, redis_retry_seconds=0.05)
    character = await insert_character(pool, alice)
    try:
        await relay.start()
        assert relay.slot is not None
        await wait_until(lambda: published == [RESYNC])  # alone at start
        published.clear()
        refusals_left = 3
        # when an event comes and Redis refuses it (and the first two retries)
        await set_image(pool, character, "https://example.com/refused.png")
        # then, with no further NOTIFY, the owed resync is published once Redis takes it
        await wait_until(lambda: published == [RESYNC])
        assert refusals_left == 0
    finally:
        await relay.close()
