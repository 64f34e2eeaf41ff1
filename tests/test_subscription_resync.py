"""A resync never ends a subscription (issue 18): the many-row subscriptions under random events, resyncs, deletions.

The property test drives ``characterImageUpdated`` (every character) and
``portraitJobs`` through the real hub on the real database: heard changes
(the triggers NOTIFY), unheard ones (the trigger off inside the transaction,
as when a LISTEN connection was away), resyncs (a NOTIFY of ``RESYNC``, as a
reconnecting backend puts one), deletions, rows of another user, with mixed
states (no image, external URL, workspace path, library path, deleted
character, jobs in every status). After a last resync, the client must hold
exactly the current state of every row of its user, having had no error and
no state of a row sent twice in a row. The end-to-end test cuts the LISTEN
connection, then Redis' pub/sub connection, under a live websocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime.change_events import EVENTS_CHANNEL, RESYNC
from realtime.event_hub import EventHub, open_event_hub
from realtime.notify_relay import APPLICATION_NAME as RELAY_APPLICATION_NAME
from realtime.postgres_backend import APPLICATION_NAME as LISTEN_APPLICATION_NAME
from resolvers import subscriptions
from resolvers.jobs import load_jobs
from resolvers.subscriptions import SubscriptionLimits, job_state
from resolvers.viewer import Viewer
from server.app import create_app
from server.cli import uvicorn_config
from server.settings import Settings
from storage.database import create_pool
from storage.enums import JobStatus
from tests.conftest import token_for
from tests.realtime_support import (
    CHARACTER_IMAGE_UPDATED,
    PORTRAIT_JOBS,
    REDIS_URL,
    GraphQLSocket,
    SilentableProxy,
    data_of,
    dsn_through,
    kill_redis_pubsub_connections,
    needs_redis,
    postgres_target,
    terminate,
)
from tests.support import free_port, serve_uvicorn

IMAGE_STATES = (
    None,
    "https://example.com/a.png",
    "https://example.com/b.png",
    "workspace-temp/{user}/w.png",
    "user-library/{user}/l.png",
)
STATUSES = tuple(status.value for status in JobStatus)
DESTINATIONS = ("character_portrait", "workspace")
# Each change's event trigger, turned off inside the change's transaction when it must go unheard.
CHARACTER_TRIGGERS = ("characters_event_insert", "characters_event_update", "characters_event_delete")
JOB_TRIGGERS = ("jobs_event_insert", "jobs_event_update")

T = TypeVar("T")


# The operations: what may happen to a user's rows while a subscription runs.
@dataclass(frozen=True)
class SetImage:
    character: int  # an index into the characters made so far (modulo their number)
    state: int  # an index into IMAGE_STATES
    heard: bool


@dataclass(frozen=True)
class CreateCharacter:
    state: int
    heard: bool


@dataclass(frozen=True)
class DeleteCharacter:
    character: int
    heard: bool


@dataclass(frozen=True)
class CreateJob:
    character: int
    status: int
    destination: int
    heard: bool


@dataclass(frozen=True)
class SetJob:
    job: int
    status: int
    queue_position: int | None
    heard: bool


@dataclass(frozen=True)
class ForeignChange:
    """Another user's character changes: nothing of it may reach this user's client."""

    state: int


@dataclass(frozen=True)
class Resync:
    pass


Operation = SetImage | CreateCharacter | DeleteCharacter | CreateJob | SetJob | ForeignChange | Resync

states = st.integers(0, len(IMAGE_STATES) - 1)
statuses = st.integers(0, len(STATUSES) - 1)
indexes = st.integers(0, 50)
operations = st.one_of(
    st.builds(SetImage, indexes, states, st.booleans()),
    st.builds(CreateCharacter, states, st.booleans()),
    st.builds(DeleteCharacter, indexes, st.booleans()),
    st.builds(CreateJob, indexes, statuses, st.integers(0, 1), st.booleans()),
    st.builds(SetJob, indexes, statuses, st.none() | st.integers(0, 5), st.booleans()),
    st.builds(ForeignChange, states),
    st.just(Resync()),
)
starts = st.tuples(st.lists(states, min_size=1, max_size=4), st.lists(st.tuples(indexes, statuses), max_size=3))


class Rows:
    """The rows of one user the test made (the database says what is current), and how to change them."""

    def __init__(self, pool: asyncpg.Pool, user: uuid.UUID) -> None:
        self.pool = pool
        self.user = user
        self.characters: list[uuid.UUID] = []
        self.jobs: list[uuid.UUID] = []
        self.foreign: uuid.UUID | None = None

    def image(self, state: int, user: uuid.UUID | None = None) -> str | None:
        template = IMAGE_STATES[state]
        return None if template is None else template.format(user=user or self.user)

    async def apply(self, operation: Operation) -> None:
        async with self.pool.acquire() as connection, connection.transaction():
            heard = getattr(operation, "heard", True)
            if not heard:
                for table, triggers in (("characters", CHARACTER_TRIGGERS), ("jobs", JOB_TRIGGERS)):
                    for trigger in triggers:
                        await connection.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")
            await self._change(connection, operation)
            if not heard:
                for table, triggers in (("characters", CHARACTER_TRIGGERS), ("jobs", JOB_TRIGGERS)):
                    for trigger in triggers:
                        await connection.execute(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")

    async def _change(self, connection: asyncpg.pool.PoolConnectionProxy[asyncpg.Record], operation: Operation) -> None:
        match operation:
            case CreateCharacter(state=state):
                self.characters.append(await connection.fetchval(
                    "INSERT INTO characters (user_id, name, description, image_url) VALUES ($1, 'N', 'D', $2) "
                    "RETURNING id", self.user, self.image(state),
                ))
            case SetImage(character=index, state=state) if self.characters:
                await connection.execute(
                    "UPDATE characters SET image_url = $2 WHERE id = $1",
                    pick(self.characters, index), self.image(state),
                )
            case DeleteCharacter(character=index) if self.characters:
                await connection.execute("DELETE FROM characters WHERE id = $1", pick(self.characters, index))
            case CreateJob(character=index, status=status, destination=destination):
                self.jobs.append(await connection.fetchval(
                    "INSERT INTO jobs (user_id, destination, character_id, model_key, prompt, status) "
                    "SELECT $1, $2, (SELECT id FROM characters WHERE id = $3), model_key, 'p', $4 "
                    "FROM image_models WHERE is_default RETURNING id",
                    self.user, DESTINATIONS[destination], pick(self.characters, index) if self.characters else None,
                    STATUSES[status],
                ))
            case SetJob(job=index, status=status, queue_position=position) if self.jobs:
                await connection.execute(
                    "UPDATE jobs SET status = $2, queue_position = $3 WHERE id = $1",
                    pick(self.jobs, index), STATUSES[status], position,
                )
            case ForeignChange(state=state):
                if self.foreign is None:
                    self.foreign = await connection.fetchval(
                        "INSERT INTO characters (user_id, name, description) VALUES ($1, 'F', 'D') RETURNING id",
                        uuid.uuid4(),
                    )
                await connection.execute(
                    "UPDATE characters SET image_url = $2 WHERE id = $1", self.foreign, self.image(state, uuid.uuid4())
                )
            case Resync():
                # What a backend puts on the channel after a gap; here through PostgreSQL, to every process.
                await connection.execute("SELECT pg_notify($1, $2)", EVENTS_CHANNEL, RESYNC)

    async def current_images(self) -> dict[uuid.UUID, str | None]:
        rows = await self.pool.fetch("SELECT id, image_url FROM characters WHERE user_id = $1", self.user)
        return {row["id"]: row["image_url"] for row in rows}


def pick(items: list[T], index: int) -> T:
    return items[index % len(items)]


class Client:
    """What a client of one subscription ends up holding: its first read of the rows, then each row it was sent."""

    def __init__(self, updates: AsyncIterator[Any], state: Callable[[Any], Hashable]) -> None:
        self.updates = updates
        self.state = state
        self.sent: list[tuple[uuid.UUID, Hashable]] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for row in self.updates:
            self.sent.append((row.id, self.state(row)))

    def has_been_sent(self, row_id: uuid.UUID, state: Hashable) -> bool:
        if self.task.done():
            self.task.result()  # the subscription ended: raise what ended it
            raise AssertionError("the subscription ended")
        return (row_id, state) in self.sent

    def view(self, first_read: dict[uuid.UUID, Hashable]) -> dict[uuid.UUID, Hashable]:
        view = dict(first_read)
        view.update(self.sent)
        return view

    def repeated(self) -> list[tuple[uuid.UUID, Hashable]]:
        """States sent twice in a row for the same row."""
        last: dict[uuid.UUID, Hashable] = {}
        repeats = []
        for row_id, state in self.sent:
            if row_id in last and last[row_id] == state:
                repeats.append((row_id, state))
            last[row_id] = state
        return repeats

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def wait_until(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.005)


@pytest.fixture
async def hub(database_url: str) -> AsyncIterator[EventHub]:
    async with open_event_hub(database_url) as hub:
        yield hub


@settings(
    max_examples=100,
    deadline=None,
    database=None,  # no example folder left in the work tree; a failure prints its reproduction
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(start=starts, steps=st.lists(operations, max_size=12))
async def test_after_any_events_resyncs_and_deletions_the_client_holds_exactly_the_current_rows(
    hub: EventHub,
    pool: asyncpg.Pool,
    start: tuple[list[int], list[tuple[int, int]]],
    steps: list[Operation],
) -> None:
    # given a user's characters in mixed states and portrait jobs of theirs (a fresh user per example)
    rows = Rows(pool, uuid.uuid4())
    first_states, first_jobs = start
    for state in first_states:
        await rows.apply(CreateCharacter(state, heard=True))
    for character, status in first_jobs:
        await rows.apply(CreateJob(character, status, destination=0, heard=True))
    # and a character and a job no step touches, whose changes mark the end
    await rows.apply(CreateCharacter(1, heard=True))
    marker = rows.characters.pop()
    await rows.apply(CreateJob(0, 1, destination=0, heard=True))
    marker_job = rows.jobs.pop()

    # and both many-row subscriptions of that user's, listening before the client's first read
    viewer = Viewer(user_id=rows.user, expires_at=datetime.now(UTC) + timedelta(hours=1))
    limits = SubscriptionLimits(max_pending=1000)
    listening = hub.subscriber_count
    images = Client(
        subscriptions.character_image_updates(pool, hub, viewer, limits, character_id=None),
        lambda character: character.image_url,
    )
    portrait_jobs = Client(subscriptions.portrait_job_updates(pool, hub, viewer, limits), job_state)
    try:
        await wait_until(lambda: hub.subscriber_count == listening + 2)
        first_images: dict[uuid.UUID, Hashable] = dict(await rows.current_images())
        first_jobs_read: dict[uuid.UUID, Hashable] = await current_portrait_jobs(pool, viewer)

        # when any sequence of changes, heard or not, resyncs and deletions happens, and a resync comes last
        for step in steps:
            await rows.apply(step)
        await rows.apply(Resync())
        # (two markers, each waited for: the second proves every delivery before the first was sent in full)
        for round_ in range(2):
            url = f"https://example.com/marker-{round_}.png"
            await pool.execute("UPDATE characters SET image_url = $2 WHERE id = $1", marker, url)
            await pool.execute("UPDATE jobs SET queue_position = $2 WHERE id = $1", marker_job, 100 + round_)
            await wait_until(functools.partial(images.has_been_sent, marker, url))
            marker_state = (await current_portrait_jobs(pool, viewer))[marker_job]
            await wait_until(functools.partial(portrait_jobs.has_been_sent, marker_job, marker_state))

        # then each client holds exactly the current state of every row of its user
        now_images = await rows.current_images()
        now_jobs = await current_portrait_jobs(pool, viewer)
        assert {row: images.view(first_images).get(row, "missing") for row in now_images} == now_images
        assert {row: portrait_jobs.view(first_jobs_read).get(row, "missing") for row in now_jobs} == now_jobs
        # with nothing of another user's, no state sent twice in a row, and the subscriptions still running
        assert {row for row, _ in images.sent} <= {*rows.characters, marker}
        assert {row for row, _ in portrait_jobs.sent} <= {*rows.jobs, marker_job}
        assert images.repeated() == [] and portrait_jobs.repeated() == []
        assert not images.task.done() and not portrait_jobs.task.done()
    finally:
        await images.close()
        await portrait_jobs.close()


async def current_portrait_jobs(pool: asyncpg.Pool, viewer: Viewer) -> dict[uuid.UUID, Hashable]:
    """Every CHARACTER_PORTRAIT job of the viewer as a client sees it, read through the same loader as queries."""
    ids = [row["id"] for row in await pool.fetch(
        "SELECT id FROM jobs WHERE user_id = $1 AND destination = 'character_portrait'", viewer.user_id
    )]
    loaded = await load_jobs(pool, viewer, ids)
    return {job.id: job_state(job) for job in loaded if job is not None}


BACKENDS = [
    pytest.param("postgres", id="postgres"),
    pytest.param("redis", id="redis", marks=needs_redis),
]


class Received:
    """Every result of a socket's operations, by operation; an error or a complete fails the test at once."""

    def __init__(self, socket: GraphQLSocket, fields: dict[str, str]) -> None:
        self.socket = socket
        self.fields = fields  # operation id -> the subscription's field
        self.rows: dict[str, list[dict[str, Any]]] = {operation: [] for operation in fields}

    async def until(self, operation: str, condition: Callable[[dict[str, Any]], bool]) -> None:
        """Read results until ``operation`` has sent a row that meets ``condition``."""
        while not any(condition(row) for row in self.rows[operation]):
            message = await self.socket.next_result(timeout=30)
            assert message["type"] == "next", f"a subscription ended: {message}"
            self.rows[message["id"]].append(data_of(message, self.fields[message["id"]]))

    def last(self, operation: str, *keys: str) -> dict[uuid.UUID, tuple[Any, ...]]:
        """What the client holds: the last ``keys`` sent per row."""
        return {uuid.UUID(row["id"]): tuple(row[key] for key in keys) for row in self.rows[operation]}

    def repeated(self, operation: str, *keys: str) -> list[dict[str, Any]]:
        """Rows sent with the same ``keys`` as the row's previous send."""
        last: dict[str, tuple[Any, ...]] = {}
        repeats = []
        for row in self.rows[operation]:
            state = tuple(row[key] for key in keys)
            if last.get(row["id"], ()) == state:
                repeats.append(row)
            last[row["id"]] = state
        return repeats


def sent(row_id: uuid.UUID, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    """A condition on a sent row: that row, with these fields."""
    return lambda row: row["id"] == str(row_id) and all(row[key] == value for key, value in fields.items())


@pytest.mark.parametrize("backend", BACKENDS)
async def test_subscriptions_go_on_across_a_cut_listen_connection_then_a_cut_redis_connection(
    settings: Settings, pool: asyncpg.Pool, alice: uuid.UUID, backend: str
) -> None:
    # given a server in the chosen fan-out mode, and alice's characters and portrait jobs in every state
    app_settings = replace(settings, broadcast_url=REDIS_URL if backend == "redis" else None)
    config = uvicorn_config(create_app(app_settings), host="127.0.0.1", port=free_port(), log_level="warning")
    rows = Rows(pool, alice)
    for state in range(len(IMAGE_STATES)):  # no image, two external URLs, a workspace path, a library path
        await rows.apply(CreateCharacter(state, heard=True))
    await rows.apply(CreateCharacter(1, heard=True))  # to be deleted
    for status in range(len(STATUSES)):
        await rows.apply(CreateJob(character=status, status=status, destination=0, heard=True))
    no_image, _, _, workspace, library, doomed = rows.characters
    queued = rows.jobs[0]
    listen_connection = RELAY_APPLICATION_NAME if backend == "redis" else LISTEN_APPLICATION_NAME
    cuts: list[Callable[[], Awaitable[int]]] = [lambda: terminate(pool, listen_connection)]
    if backend == "redis":
        cuts.append(kill_redis_pubsub_connections)

    async with serve_uvicorn(config) as served, GraphQLSocket.open(
        served.url("/graphql"), token=token_for(alice)
    ) as socket:
        # and alice's client subscribed to every character's image and to her portrait jobs, heard live
        images = await socket.subscribe(CHARACTER_IMAGE_UPDATED, {})
        portrait_jobs = await socket.subscribe(PORTRAIT_JOBS)
        received = Received(socket, {images: "characterImageUpdated", portrait_jobs: "portraitJobs"})
        await pool.execute("UPDATE characters SET image_url = 'https://example.com/live.png' WHERE id = $1", library)
        await received.until(images, lambda row: row["imageUrl"] == "https://example.com/live.png")
        await rows.apply(SetJob(0, STATUSES.index("processing"), queue_position=None, heard=True))
        await received.until(portrait_jobs, sent(queued, status="PROCESSING"))

        for round_, cut in enumerate(cuts):
            # when changes go unheard (as while a connection is away), then the connection is cut and comes back
            gap_image = f"workspace-temp/{alice}/gap-{round_}.png"
            async with pool.acquire() as connection, connection.transaction():
                await connection.execute("ALTER TABLE characters DISABLE TRIGGER characters_event_update")
                await connection.execute("UPDATE characters SET image_url = $2 WHERE id = $1", workspace, gap_image)
                await connection.execute("ALTER TABLE characters ENABLE TRIGGER characters_event_update")
            gap_status = ("completed", "failed")[round_]
            await rows.apply(SetJob(0, STATUSES.index(gap_status), queue_position=None, heard=False))
            assert await cut() >= 1

            # then the resync (which re-reads the character with no image too) sends what went unheard
            await received.until(images, sent(workspace, imageUrl=gap_image))
            await received.until(portrait_jobs, sent(queued, status=gap_status.upper()))
            # and the subscriptions go on: after a deletion (not an image change), a heard change still arrives
            if round_ == 0:
                await pool.execute("DELETE FROM characters WHERE id = $1", doomed)
            after = f"https://example.com/after-{round_}.png"
            await pool.execute("UPDATE characters SET image_url = $2 WHERE id = $1", no_image, after)
            await received.until(images, sent(no_image, imageUrl=after))

    # and the client holds every row it was sent as the row is now, none sent twice alike in a row
    now_images = await rows.current_images()
    assert doomed not in now_images
    held_images = received.last(images, "imageUrl")
    assert {row: held_images[row] for row in now_images if row in held_images} == {
        row: (image,) for row, image in now_images.items() if row in held_images
    }
    now_jobs = {row["id"]: (row["status"].upper(),) for row in await pool.fetch(
        "SELECT id, status FROM jobs WHERE user_id = $1", alice
    )}
    held_jobs = received.last(portrait_jobs, "status")
    assert held_jobs == {row: now_jobs[row] for row in held_jobs}
    assert received.repeated(images, "imageUrl") == []
    assert received.repeated(portrait_jobs, "status", "characterId") == []


async def test_a_reread_the_database_refuses_for_a_while_is_tried_again_and_the_subscription_goes_on(
    database_url: str, pool: asyncpg.Pool, hub: EventHub, alice: uuid.UUID
) -> None:
    # given alice's all-characters subscription re-reading through a pool whose database can go away
    async with SilentableProxy(postgres_target(database_url)) as proxy:
        reads = await create_pool(dsn_through(database_url, proxy.port), max_size=1)
        rows = Rows(pool, alice)
        await rows.apply(CreateCharacter(0, heard=True))
        [character] = rows.characters
        viewer = Viewer(user_id=alice, expires_at=datetime.now(UTC) + timedelta(hours=1))
        listening = hub.subscriber_count
        updates = subscriptions.character_image_updates(reads, hub, viewer, SubscriptionLimits(), character_id=None)
        sent = asyncio.ensure_future(updates.__anext__())
        try:
            await wait_until(lambda: hub.subscriber_count == listening + 1)

            # when the database refuses the re-read's connections for a while (a restart, a failover, a pool
            # drained by every subscriber re-reading at once), while an image changes
            proxy.refuse()
            await rows.apply(SetImage(0, 1, heard=True))
            await wait_until(lambda: proxy.refused >= 2)  # two re-reads failed
            assert not sent.done()
            proxy.accept()

            # then the re-read is tried again, and the change is sent on a subscription that goes on
            row = await asyncio.wait_for(sent, 30)
            assert (row.id, row.image_url) == (character, rows.image(1))
            await rows.apply(SetImage(0, 2, heard=True))
            assert (await asyncio.wait_for(updates.__anext__(), 30)).image_url == rows.image(2)
        finally:
            sent.cancel()
            await updates.aclose()
            await reads.close()
