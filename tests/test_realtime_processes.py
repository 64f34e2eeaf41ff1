"""Realtime across processes: `portraits serve` and `portraits worker` processes on one database.

Each server process has its own LISTEN connection; events come from the
database, so a change made through one process, or by a worker, reaches
subscribers on every process. With BROADCAST_URL=redis://... the same holds
through our Redis backend (used by broadcaster), fed by two relays at once (a leader and
a hot standby): a relay killed during a burst loses no event. Processes are
killed (SIGKILL) and restarted as an operator's failures would do it, and a
graceful stop says what it closed without a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as redis

from realtime.change_events import EVENTS_CHANNEL
from realtime.postgres_backend import APPLICATION_NAME as LISTEN_APPLICATION_NAME
from tests.conftest import s3_environ, token_for
from tests.realtime_support import (
    CHARACTER_IMAGE_UPDATED,
    JOB_UPDATED,
    PORTRAIT_JOBS,
    REDIS_URL,
    GraphQLSocket,
    data_of,
    insert_character,
    needs_redis,
    redis_is_running,
    terminate,
)
from tests.server_process import READY, Server
from tests.support import TEST_JWT_SECRET

BACKENDS = [
    pytest.param("postgres", id="postgres"),
    pytest.param(
        "redis", id="redis", marks=pytest.mark.skipif(not redis_is_running(), reason="no Redis on 127.0.0.1:6379")
    ),
]


def start(
    servers: list[Server], data_dir: Path, database_url: str, backend: str, *, command: str = "serve", **env: str
) -> Server:
    environment = {"DATABASE_URL": database_url, "JWT_SECRET": TEST_JWT_SECRET, "WORKERS": "0", **env}
    if backend == "redis":
        environment["BROADCAST_URL"] = REDIS_URL
    process = Server(data_dir, command=command, **environment)
    servers.append(process)
    return process


def post(server: Server, user: uuid.UUID, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/graphql", json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token_for(user)}"}, timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return body["data"]


def ws_url(server: Server) -> str:
    return f"ws://127.0.0.1:{server.port}/graphql"


CREATE = "mutation($input: CreateCharacterInput!) { createCharacter(input: $input) { id } }"
SET_IMAGE = "mutation($id: ID!, $url: String) { updateCharacter(id: $id, input: {imageUrl: $url}) { id } }"
GENERATE = "mutation($id: ID!) { generateCharacterPortrait(input: {characterId: $id}) { id status } }"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_change_through_one_server_reaches_a_subscriber_on_the_other(
    tmp_path: Path, database_url: str, servers: list[Server], alice: uuid.UUID, backend: str
) -> None:
    # given two server processes on one database
    first = start(servers, tmp_path, database_url, backend)
    second = start(servers, tmp_path, database_url, backend)
    first.wait_for(READY)
    second.wait_for(READY)
    character = post(
        first, alice, CREATE, {"input": {"name": "Iris", "description": "A cartographer."}}
    )["createCharacter"]

    # and a subscriber on the second
    async with GraphQLSocket.open(ws_url(second), token=token_for(alice)) as socket:
        await socket.subscribe(CHARACTER_IMAGE_UPDATED, {"characterId": character["id"]})
        # (a first change heard proves the subscription is live before the one under test)
        await until_heard(socket, lambda url: post(first, alice, SET_IMAGE, {"id": character["id"], "url": url}))

        # when the image changes through the first
        post(first, alice, SET_IMAGE, {"id": character["id"], "url": "https://example.com/iris.png"})

        # then the subscriber on the second hears it (after any warm-up change still on its way)
        update = data_of(await socket.next_result(), "characterImageUpdated")
        while "/warm/" in update["imageUrl"]:
            update = data_of(await socket.next_result(), "characterImageUpdated")
    assert (update["id"], update["imageUrl"]) == (character["id"], "https://example.com/iris.png")


async def until_heard(socket: GraphQLSocket, change: Callable[[str], object], timeout: float = 30) -> None:
    """Warm-up changes, one a second, until the subscription hears one.

    Nothing says when a subscription started on another process is listening:
    a single change made too early is never heard, and the test would wait for it.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        url = f"https://example.com/warm/{uuid.uuid4()}.png"
        change(url)
        with contextlib.suppress(TimeoutError):
            while True:
                if data_of(await socket.next_result(timeout=1), "characterImageUpdated")["imageUrl"] == url:
                    return
    raise AssertionError(f"no warm-up change heard in {timeout:g}s")


async def test_a_worker_process_progress_reaches_both_servers_even_across_a_killed_listen_connection(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool, servers: list[Server], alice: uuid.UUID
) -> None:
    # given two servers, a queued portrait job, and a subscriber to it on each server
    first = start(servers, tmp_path, database_url, "postgres")
    second = start(servers, tmp_path, database_url, "postgres")
    first.wait_for(READY)
    second.wait_for(READY)
    character = post(
        first, alice, CREATE, {"input": {"name": "Iris", "description": "A cartographer."}}
    )["createCharacter"]
    job = post(first, alice, GENERATE, {"id": character["id"]})["generateCharacterPortrait"]
    async with GraphQLSocket.open(ws_url(first), token=token_for(alice)) as one, GraphQLSocket.open(
        ws_url(second), token=token_for(alice)
    ) as two:
        operations = {
            one: await one.subscribe(JOB_UPDATED, {"id": job["id"]}),
            two: await two.subscribe(JOB_UPDATED, {"id": job["id"]}),
        }
        for socket in operations:
            assert data_of(await socket.next_result(), "jobUpdated")["status"] == "QUEUED"

        # when a worker process runs the job (slowly), and both servers' LISTEN connections are killed mid-job
        start(servers, tmp_path, database_url, "postgres", command="worker", LOCAL_RENDER_LATENCY_MS="1500")
        for socket in operations:
            assert data_of(await socket.next_result(), "jobUpdated")["status"] == "PROCESSING"
        assert await terminate(pool, LISTEN_APPLICATION_NAME) >= 2

        # then each subscriber still gets the final state, and its stream completes
        finals = {}
        for socket, operation in operations.items():
            results = [data_of(message, "jobUpdated") for message in await socket.results_until_complete(operation)]
            finals[socket] = results[-1]
    for final in finals.values():
        assert final["status"] == "COMPLETED"
        assert final["character"]["imageUrl"].startswith(f"user-library/{alice}/")


# -- failover: relays, workers and API processes killed and restarted ------------------------------

WORKER_READY = "portraits worker:"
LEASE_SECONDS = "3"  # the least JOB_LEASE_SECONDS allows: a killed worker's job is taken over this soon
LEADING = "relaying change events to Redis (slot 1 of"


def leads(server: Server) -> bool:
    """Whether a ready Redis-mode server took relay slot 1, the leader's (it takes its slot before it is ready)."""
    return LEADING in server.rest_of_output()


async def ready(*processes: Server) -> None:
    """Wait (off the event loop, so sockets keep being read) until each process says it is ready."""
    await asyncio.gather(*(
        asyncio.to_thread(process.wait_for, WORKER_READY if process.command == "worker" else READY)
        for process in processes
    ))


async def apost(server: Server, user: uuid.UUID, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    """``post`` off the event loop, for tests whose loop must keep serving meanwhile."""
    return await asyncio.to_thread(post, server, user, query, variables)


def stop_gracefully(server: Server) -> str:
    """SIGTERM, as an orchestrator stops a process; what it printed from the signal on."""
    seen = len(server.rest_of_output().splitlines())
    assert server.stop(signal.SIGTERM, timeout=30) == 0
    return "\n".join(server.rest_of_output().splitlines()[seen:])


def kill(process: Server) -> None:
    process.process.send_signal(signal.SIGKILL)
    assert process.process.wait(timeout=10) == -signal.SIGKILL


def warnings_in(output: str) -> list[str]:
    """Lines logged at WARNING or worse (ours: "... WARNING name: ...", uvicorn's: "WARNING:  ..."), and tracebacks."""
    return [
        line for line in output.splitlines()
        if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line) or line.startswith("Traceback")
    ]


class Received:
    """What a subscription socket received, with the time each message arrived, read in the background."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.arrived = asyncio.Event()

    @classmethod
    @asynccontextmanager
    async def reading(cls, socket: GraphQLSocket) -> AsyncIterator[Received]:
        received = cls()

        async def read() -> None:
            while True:
                message = await socket.next_result(timeout=3600)
                received.messages.append((time.time(), message))
                received.arrived.set()

        reader = asyncio.create_task(read())
        try:
            yield received
        finally:
            while not reader.done():  # (a cancellation may be lost as a message arrives: cancel until it ends)
                reader.cancel()
                await asyncio.wait([reader], timeout=1)

    def data(self, field: str) -> list[tuple[float, dict[str, Any]]]:
        return [(at, data_of(message, field)) for at, message in self.messages]

    async def until(self, done: Any, timeout: float) -> None:
        """Until ``done()`` holds; fails after ``timeout`` s (a liveness bound, not a latency check)."""
        async with asyncio.timeout(timeout):
            while not done():
                self.arrived.clear()
                await self.arrived.wait()


def print_delays(title: str, delays_ms: list[float]) -> None:
    if not delays_ms:
        print(f"{title}: none")
        return
    ordered = sorted(delays_ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    print(f"{title}: {len(ordered)} events, p50 {statistics.median(ordered):.1f} ms, "
          f"p99 {p99:.1f} ms, max {ordered[-1]:.1f} ms")


@needs_redis
async def test_every_event_of_a_burst_reaches_another_process_when_the_relay_leader_is_killed(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool, servers: list[Server], alice: uuid.UUID
) -> None:
    # given two API processes in Redis mode (both relay: the leader, slot 1, and the hot standby)
    pair = [start(servers, tmp_path, database_url, "redis") for _ in range(2)]
    await ready(*pair)
    [leader] = [server for server in pair if leads(server)]
    [standby] = [server for server in pair if server is not leader]
    # and alice's characters, a subscriber to all of them on the standby, and a bare Redis subscriber
    characters = [await insert_character(pool, alice) for _ in range(120)]
    warm = await insert_character(pool, alice)
    watcher = redis.Redis.from_url(REDIS_URL).pubsub()
    await watcher.subscribe(EVENTS_CHANNEL)
    published: dict[uuid.UUID, float] = {}

    async def watch() -> None:
        while True:
            message = await watcher.get_message(ignore_subscribe_messages=True, timeout=3600)
            if message is not None:
                text = message["data"].decode()
                for character in characters:  # first copy of each burst event, by the row it names
                    if str(character) in text and character not in published:
                        published[character] = time.time()

    watching = asyncio.create_task(watch())
    try:
        async with GraphQLSocket.open(ws_url(standby), token=token_for(alice)) as socket, \
                Received.reading(socket) as received:
            await socket.subscribe(CHARACTER_IMAGE_UPDATED, {})
            await prove_live(pool, received, warm)

            # when the relay leader is killed (SIGKILL) a third of the way into a burst of 120 changes, ~100/s
            committed: dict[uuid.UUID, float] = {}
            killed_at = 0.0
            for number, character in enumerate(characters):
                if number == len(characters) // 3:
                    leader.process.send_signal(signal.SIGKILL)
                    killed_at = time.time()
                await pool.execute(
                    "UPDATE characters SET image_url = $2 WHERE id = $1", character, f"https://example.com/{number}.png"
                )
                committed[character] = time.time()
                await asyncio.sleep(0.01)
            assert leader.process.wait(timeout=10) == -signal.SIGKILL

            # then the subscriber on the other process gets every change
            def heard() -> dict[str, float]:
                return {
                    data["id"]: at for at, data in received.data("characterImageUpdated")
                    if data["imageUrl"] and "/warm" not in data["imageUrl"]
                }

            await received.until(lambda: len(heard()) == len(characters), timeout=60)
            # and every event was published to Redis as itself (relayed by the standby), not only covered by a resync
            async with asyncio.timeout(30):
                while len(published) < len(characters):
                    await asyncio.sleep(0.05)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await watcher.aclose()
    by_id = heard()
    after_kill = [character for character in characters if committed[character] >= killed_at]
    print()
    print_delays("relay leader killed: commit -> Redis, events after the kill",
                 [max(0.0, published[c] - committed[c]) * 1000 for c in after_kill])
    print_delays("relay leader killed: commit -> subscriber on the other process, events after the kill",
                 [max(0.0, by_id[str(c)] - committed[c]) * 1000 for c in after_kill])
    print_delays("relay leader killed: commit -> subscriber, every event of the burst",
                 [max(0.0, by_id[str(c)] - committed[c]) * 1000 for c in characters])


async def prove_live(pool: asyncpg.Pool, received: Received, character: uuid.UUID, timeout: float = 30) -> None:
    """Changes, one a second, until the subscription hears one, so it is known to be listening (nothing else says
    so, and a single change made before it listens is never heard)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        url = f"https://example.com/warm/{uuid.uuid4()}.png"
        await pool.execute("UPDATE characters SET image_url = $2 WHERE id = $1", character, url)
        try:
            await received.until(
                lambda url=url: any(data["imageUrl"] == url for _, data in received.data("characterImageUpdated")),
                timeout=1,
            )
            return
        except TimeoutError:
            if asyncio.get_running_loop().time() > deadline:
                raise


@pytest.mark.parametrize("backend", BACKENDS)
async def test_every_final_state_reaches_the_other_api_through_a_killed_worker_and_restarted_apis(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool, servers: list[Server], alice: uuid.UUID,
    s3_endpoint: str, backend: str,
) -> None:
    # given two API processes (WORKERS=0) and two `portraits worker` processes on one database and one S3
    shared = {**s3_environ(s3_endpoint), "MAX_ACTIVE_JOBS_PER_USER": "100"}
    workers_env = {
        **shared, "JOB_LEASE_SECONDS": LEASE_SECONDS, "LOCAL_RENDER_LATENCY_MS": "800", "WORKER_POLL_SECONDS": "0.5",
        "JOB_RETRY_BASE_SECONDS": "0.1", "SWEEP_INTERVAL_SECONDS": "0",
    }

    def api() -> Server:
        return start(servers, tmp_path, database_url, backend, **shared)

    pair = [api(), api()]
    first_worker, second_worker = (
        start(servers, tmp_path, database_url, backend, command="worker", **workers_env) for _ in range(2)
    )
    await ready(*pair, first_worker, second_worker)
    # (in Redis mode the API that jobs go through is the relay leader, so its failures are the leader's)
    creator, listener = pair if backend == "postgres" or leads(pair[0]) else pair[::-1]
    jobs: list[str] = []

    async def generate(through: Server, count: int) -> None:
        for _ in range(count):
            character = (await apost(through, alice, CREATE, {"input": {"name": "Iris", "description": "A map."}}))
            job = await apost(through, alice, GENERATE, {"id": character["createCharacter"]["id"]})
            jobs.append(job["generateCharacterPortrait"]["id"])

    # and a subscriber to alice's portrait jobs on one API process
    async with GraphQLSocket.open(ws_url(listener), token=token_for(alice)) as socket, \
            Received.reading(socket) as received:
        await socket.subscribe(PORTRAIT_JOBS, {})
        await asyncio.sleep(0.5)  # nothing says a subscription is live; every job below outlasts this anyway

        # when jobs are created through the other, and a worker is killed (SIGKILL) holding one of them
        await generate(creator, 6)  # more than one worker takes at once (4), so both get some
        await until_a_job_runs_on(pool, first_worker)
        kill(first_worker)

        # and the other API process is restarted gracefully (with a subscriber of its own), and says what it
        # closed, without a warning
        async with GraphQLSocket.open(ws_url(creator), token=token_for(alice)) as own:
            await own.subscribe(PORTRAIT_JOBS, {})
            await asyncio.sleep(0.2)
            output = await asyncio.to_thread(stop_gracefully, creator)
        assert warnings_in(output) == [], output
        assert "change-event hub closed" in output
        if backend == "redis":
            assert "Redis pub/sub closed" in output and "stopped relaying change events to Redis (slot 1" in output
        else:
            assert "stopped listening on portraits_events" in output
        creator = api()
        await ready(creator)
        await generate(creator, 3)

        # and it is killed (SIGKILL) with jobs in flight (in Redis mode: the relay leader again), and restarted
        if backend == "redis":
            assert leads(creator)
        kill(creator)
        creator = api()
        await ready(creator)
        await generate(creator, 3)

        # then the subscriber gets every job's final state, once
        def completed() -> list[str]:
            return [data["id"] for _, data in received.data("portraitJobs") if data["status"] == "COMPLETED"]

        await received.until(lambda: set(completed()) == set(jobs), timeout=60)
        await asyncio.sleep(0.3)  # (room for a duplicate to show)
    assert sorted(completed()) == sorted(jobs)
    # and the API process that stayed up logged no warning through it all, nor as it stops; nor does a worker
    listener_stop, worker_stop = stop_gracefully(listener), stop_gracefully(second_worker)
    assert warnings_in(listener.rest_of_output()) == [], listener.rest_of_output()
    assert "change-event hub closed" in listener_stop
    assert warnings_in(worker_stop) == [], worker_stop
    assert "stopped listening on portraits_jobs_ready" in worker_stop
    last = {data["id"]: data["status"] for _, data in received.data("portraitJobs")}
    assert set(last.values()) == {"COMPLETED"}
    # and each job ran to completion once (the killed worker's job was taken over, not run twice to the end)
    statuses = await pool.fetch("SELECT status FROM jobs WHERE id = ANY($1::uuid[])", [uuid.UUID(j) for j in jobs])
    assert [row["status"] for row in statuses] == ["completed"] * len(jobs)


async def until_a_job_runs_on(pool: asyncpg.Pool, worker: Server) -> None:
    """Until the worker process holds a running job (``jobs.worker_id`` is host:pid:suffix)."""
    async with asyncio.timeout(30):
        while not await pool.fetchval(
            "SELECT count(*) FROM jobs WHERE status = 'processing' AND worker_id LIKE $1",
            f"%:{worker.process.pid}:%",
        ):
            await asyncio.sleep(0.02)
