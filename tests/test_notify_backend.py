"""Our broadcaster backend and relay on a real PostgreSQL (and Redis when the machine has one)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import orjson
import pytest
import redis.asyncio as redis
from broadcaster import Broadcast, Event

from realtime.change_events import RESYNC, RESYNC_CHANNEL, ChangeNotice, Resync, parse_message, user_channel
from storage.errors import StorageUnavailable
from realtime.event_hub import open_event_hub
from realtime.postgres_backend import PostgresNotifyBackend
from realtime.notify_relay import NotifyRelay

REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_is_running() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        return False
    return True


async def insert_character(pool: asyncpg.Pool, user: uuid.UUID, image_url: str | None = None) -> uuid.UUID:
    character_id: uuid.UUID = await pool.fetchval(
        "INSERT INTO characters (user_id, name, description, image_url) VALUES ($1, 'N', 'D', $2) RETURNING id", user, image_url
    )
    return character_id


async def set_image(pool: asyncpg.Pool, character_id: uuid.UUID, image_url: str) -> None:
    await pool.execute("UPDATE characters SET image_url = $2 WHERE id = $1", character_id, image_url)


async def terminate(pool: asyncpg.Pool, application_name: str) -> int:
    """Kill the LISTEN connection(s) by name and wait until the server has let them go."""
    pids = await pool.fetch(
        "SELECT pg_terminate_backend(pid), pid FROM pg_stat_activity WHERE application_name = $1", application_name
    )
    while await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", [row["pid"] for row in pids]):
        await asyncio.sleep(0.01)
    return len(pids)


async def next_event(broadcast_backend: PostgresNotifyBackend, timeout: float = 10) -> Event:
    return await asyncio.wait_for(broadcast_backend.next_published(), timeout)


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


async def test_triggers_send_small_events_only_to_the_owners_channel(
    backend: PostgresNotifyBackend, pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    # given the backend subscribed to alice's channel only
    await backend.subscribe(user_channel(alice))
    bobs = await insert_character(pool, bob)
    alices = await insert_character(pool, alice)

    # when bob's character's image changes, then alice's
    await set_image(pool, bobs, "https://example.com/b.png")
    await set_image(pool, alices, "https://example.com/a.png")
    event = await next_event(backend)

    # then the backend hands over alice's event only, naming the row but carrying none of it
    assert event.channel == user_channel(alice)
    payload = orjson.loads(event.message)
    assert set(payload) == {"user", "kind", "op", "id", "at"}
    assert (payload["kind"], payload["op"], payload["id"]) == ("character", "update", str(alices))
    assert len(event.message) < 300
    notice = parse_message(event.message)
    assert isinstance(notice, ChangeNotice) and notice.user_id == alice and notice.id == alices


async def test_an_event_is_heard_only_after_commit(
    backend: PostgresNotifyBackend, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    await backend.subscribe(user_channel(alice))
    character = await insert_character(pool, alice)
    async with pool.acquire() as connection:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("UPDATE characters SET image_url = 'https://example.com/x.png' WHERE id = $1", character)
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
    await backend.subscribe(user_channel(alice))
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
    await backend.subscribe(user_channel(alice))
    messages = [
        orjson.dumps({"user": str(alice), "kind": "job", "op": "update", "id": str(uuid.uuid4())}).decode() for _ in range(50)
    ]
    # when 50 publishes run at once
    await asyncio.gather(*(backend.publish(user_channel(alice), message) for message in messages))
    # then every one is delivered
    received = {(await next_event(backend)).message for _ in messages}
    assert received == set(messages)


async def test_publish_refuses_a_message_for_another_channel(backend: PostgresNotifyBackend, alice: uuid.UUID, bob: uuid.UUID) -> None:
    message = orjson.dumps({"user": str(bob), "kind": "job", "op": "update", "id": str(uuid.uuid4())}).decode()
    with pytest.raises(ValueError):
        await backend.publish(user_channel(alice), message)


async def test_after_the_connection_is_killed_it_listens_again_and_resyncs_every_channel(
    backend: PostgresNotifyBackend, pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    # given subscriptions on two channels
    await backend.subscribe(user_channel(alice))
    await backend.subscribe(user_channel(bob))
    character = await insert_character(pool, alice)

    # when the LISTEN connection is terminated, and a change commits while it is gone
    async with pool.acquire() as connection, connection.transaction():
        assert await terminate(pool, backend.application_name) == 1  # type: ignore[attr-defined]
        await connection.execute("UPDATE characters SET image_url = 'https://example.com/gap.png' WHERE id = $1", character)

    # then next_published does not raise: it yields a resync on each channel once the connection is back
    resyncs = [await next_event(backend), await next_event(backend)]
    assert {event.channel for event in resyncs} == {user_channel(alice), user_channel(bob)}
    assert all(isinstance(parse_message(event.message), Resync) for event in resyncs)
    # and events flow again on the new connection
    await set_image(pool, character, "https://example.com/after.png")
    after = await next_event(backend)
    assert orjson.loads(after.message)["id"] == str(character)


async def test_a_silently_dead_connection_is_noticed_by_the_health_check(
    backend: PostgresNotifyBackend, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a LISTEN connection whose transport is cut without the server saying so
    await backend.subscribe(user_channel(alice))
    listen = backend._listen  # noqa: SLF001 - reaching in is the only way to cut the socket under asyncpg
    assert listen._connection is not None  # noqa: SLF001
    listen._connection._transport.pause_reading()  # noqa: SLF001 - answers never arrive, as on a dead network
    # when the periodic check times out, then the backend reconnects and resyncs
    event = await next_event(backend, timeout=20)
    assert event.message == RESYNC


async def test_an_unreachable_database_at_start_does_not_raise(database_url: str, alice: uuid.UUID) -> None:
    # given a server address nobody listens on
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = PostgresNotifyBackend(f"postgresql://nobody@127.0.0.1:{port}/none")
    # when it connects, it keeps trying in the background; publishing says the service is unavailable
    await backend.connect()
    try:
        with pytest.raises(StorageUnavailable):
            await backend.publish(user_channel(alice), orjson.dumps({"user": str(alice)}).decode())
        waiting = asyncio.ensure_future(backend.next_published())
        await asyncio.sleep(0.5)
        assert not waiting.done()  # waits, never raises
        waiting.cancel()
    finally:
        await backend.disconnect()


@pytest.mark.skipif(not redis_is_running(), reason="no Redis on 127.0.0.1:6379")
async def test_redis_fan_out_reaches_every_process_through_one_relay(
    database_url: str, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given two hubs on broadcaster's Redis backend, as two server processes would run
    character = await insert_character(pool, alice)
    async with open_event_hub(database_url, broadcast_url=REDIS_URL) as first, open_event_hub(
        database_url, broadcast_url=REDIS_URL
    ) as second:
        accepts = lambda notice: True  # noqa: E731
        async with first.subscribe(alice, accepts=accepts, max_pending=10, max_lag_seconds=60) as one, second.subscribe(
            alice, accepts=accepts, max_pending=10, max_lag_seconds=60
        ) as two:
            # then exactly one of them relays the database's events to Redis
            leaders = [hub for hub in (first, second) if hub.relay is not None and hub.relay.is_leader]
            assert len(leaders) == 1
            await drain_resyncs(one, two)

            # when the character's image changes
            await set_image(pool, character, "https://example.com/redis.png")

            # then both processes' subscribers hear it, once
            for mailbox in (one, two):
                delivery = await asyncio.wait_for(mailbox.next(), 10)
                assert [notice.id for notice in delivery.notices] == [character]


async def drain_resyncs(*mailboxes: object) -> None:
    """A relay announces a resync when it takes the lead; let it pass."""
    await asyncio.sleep(0.5)
    for mailbox in mailboxes:
        while mailbox._resync or mailbox._pending:  # type: ignore[attr-defined]  # noqa: SLF001
            await mailbox.next()  # type: ignore[attr-defined]


async def test_broadcast_over_our_backend_delivers_to_every_subscriber_of_a_channel(
    database_url: str, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given broadcaster's Broadcast on our backend, with two subscribers on alice's channel
    broadcast = Broadcast(backend=PostgresNotifyBackend(database_url))  # type: ignore[arg-type]
    await broadcast.connect()
    try:
        async with broadcast.subscribe(user_channel(alice)) as one, broadcast.subscribe(user_channel(alice)) as two:
            character = await insert_character(pool, alice)
            await set_image(pool, character, "https://example.com/both.png")
            first = await asyncio.wait_for(one.get(), 10)
            second = await asyncio.wait_for(two.get(), 10)
        assert first == second
        assert orjson.loads(first.message)["id"] == str(character)
    finally:
        await broadcast.disconnect()


async def test_one_relay_leads_and_another_takes_over_when_it_goes(
    database_url: str, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given two relays (as two server processes in Redis mode), each publishing into its own list
    published: dict[str, list[tuple[str, str]]] = {"first": [], "second": []}

    def recorder(name: str) -> Callable[[str, str], Awaitable[None]]:
        async def publish(channel: str, message: str) -> None:
            published[name].append((channel, message))
        return publish

    first = NotifyRelay(database_url, recorder("first"), leader_retry_seconds=0.1)
    second = NotifyRelay(database_url, recorder("second"), leader_retry_seconds=0.1)
    await first.start()
    await second.start()
    try:
        # then only the first leads, and announces a resync as it takes the lead
        assert (first.is_leader, second.is_leader) == (True, False)
        character = await insert_character(pool, alice)
        await set_image(pool, character, "https://example.com/one.png")
        await wait_until(lambda: len(published["first"]) == 2)
        assert published["first"][0] == (RESYNC_CHANNEL, RESYNC)
        assert published["first"][1][0] == user_channel(alice)
        assert published["second"] == []

        # when the leader goes away
        await first.close()
        await wait_until(lambda: second.is_leader)
        await wait_until(lambda: len(published["second"]) == 1)
        await set_image(pool, character, "https://example.com/two.png")

        # then the second leads: resync first (events of the handover are lost), then relays
        await wait_until(lambda: len(published["second"]) == 2)
        assert published["second"][0] == (RESYNC_CHANNEL, RESYNC)
        assert orjson.loads(published["second"][1][1])["id"] == str(character)
        assert len(published["first"]) == 2
    finally:
        await first.close()
        await second.close()


async def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


@pytest.mark.skipif(not redis_is_running(), reason="no Redis on 127.0.0.1:6379")
async def test_redis_fan_out_survives_a_killed_pubsub_connection(
    database_url: str, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a hub on Redis with a live subscription
    character = await insert_character(pool, alice)
    async with open_event_hub(database_url, broadcast_url=REDIS_URL) as hub:
        async with hub.subscribe(alice, accepts=lambda notice: True, max_pending=10, max_lag_seconds=60) as mailbox:
            await drain_resyncs(mailbox)

            # when Redis drops every pubsub connection (as a restart would)
            client = redis.Redis.from_url(REDIS_URL)
            try:
                assert await client.execute_command("CLIENT KILL TYPE pubsub") >= 1
            finally:
                await client.aclose()

            # then the subscriber is told to resync (what was published meanwhile is lost)
            delivery = await asyncio.wait_for(mailbox.next(), 10)
            assert delivery.resync
            # and later changes reach it again
            await set_image(pool, character, "https://example.com/after-kill.png")
            delivery = await asyncio.wait_for(mailbox.next(), 10)
            assert [notice.id for notice in delivery.notices] == [character]
