"""Realtime across server processes, and through the death of the Redis relay leader. Prints figures; not a test.

It starts a throw-away PostgreSQL (or uses DATABASE_URL) and, for each mode
(PostgreSQL LISTEN/NOTIFY fan-out; then Redis fan-out, if Redis answers at
--redis-url), two API processes A and B (``python -m server.cli serve``,
WORKERS=0) and --workers ``portraits worker`` processes on one database and
one local object folder. A starts first, so in Redis mode it holds relay
slot 1 (the leader) and B slot 2 (the hot standby).

1. Completion to receipt across processes: --jobs portrait jobs (one
   character each, the local renderer at IMAGE_SIZE=256) are created through
   A's GraphQL API at --rate jobs/s; a subscriber on B
   (``portraitJobs``, graphql-transport-ws) notes when each job's COMPLETED
   arrives. A job's completion is when this process hears its "completed"
   change event on a LISTEN connection of its own (the commit, give or take
   a millisecond; one machine, one clock). p50/p90/p99/max; target: p99
   under 100 ms in both modes.
2. Redis mode only, the relay leader killed: --kills times, a burst of
   --burst updates of distinct characters at --burst-rate/s, with A (slot 1)
   SIGKILLed a third of the way in and restarted after the burst (it takes
   slot 1 again). A subscriber on B (``characterImageUpdated`` for every
   character of one user) notes when each new image arrives: the delay from
   each UPDATE's commit to its receipt. p50/p99/max over the events
   committed after each kill, and over every event; events never heard
   (within --timeout) are counted. Target: p99 under 500 ms.

The load average before each part is printed: the machine's other work
shows in the figures.

    python bench/failover.py [--jobs 200] [--rate 10] [--workers 2] [--kills 5] [--burst 300] [--burst-rate 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg
import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from list_characters import Server, database, free_port, run_in_workdir
from loadgen import percentile
from realtime.change_events import EVENTS_CHANNEL
from server.auth import issue_token
from storage.migrate import migrate
from storage.relay_slots import count_held

PUBLIC_URL = "http://bench.invalid"
PROTOCOL = "graphql-transport-ws"
PORTRAIT_JOBS = "subscription { portraitJobs { id status } }"
IMAGES = "subscription { characterImageUpdated { id imageUrl } }"
GENERATE = "mutation($id: ID!) { generateCharacterPortrait(input: {characterId: $id}) { id } }"
TARGET_P99_MS = 100.0
TARGET_KILL_P99_MS = 500.0
WORKER_READY = "portraits worker:"


# -- processes -----------------------------------------------------------------------


@dataclass
class Cluster:
    """The API processes A and B and the workers of one mode, on one database."""

    dsn: str
    secret: str
    workdir: Path
    broadcast_url: str | None
    workers: int
    api: dict[str, Server] = field(default_factory=dict)
    worker_processes: list[Server] = field(default_factory=list)

    def environment(self, name: str) -> dict[str, str]:
        env = {
            "DATABASE_URL": self.dsn,
            "JWT_SECRET": self.secret,
            "HOST": "127.0.0.1",
            "LOG_LEVEL": "warning",
            "PORTRAITS_DATA_DIR": str(self.workdir / f"data-{name}"),
            "OBJECTS_DIR": str(self.workdir / "objects"),
            "PUBLIC_URL": PUBLIC_URL,
            "WORKERS": "0",
            "MAX_ACTIVE_JOBS_PER_USER": "10000",
            "IMAGE_SIZE": "256",
            "THUMBNAIL_MAX_SIDE": "64",
            "SWEEP_INTERVAL_SECONDS": "0",
        }
        if self.broadcast_url is not None:
            env["BROADCAST_URL"] = self.broadcast_url
        return env

    def start_api(self, name: str) -> Server:
        port = free_port()
        env = {**self.environment(name), "PORT": str(port)}
        server = Server(name, [sys.executable, "-m", "server.cli", "serve"], env, port,
                        self.workdir / f"{name}-{time.monotonic_ns()}.log")
        server.wait_healthy()
        self.api[name] = server
        return server

    def start(self) -> None:
        for number in range(self.workers):
            name = f"worker{number + 1}"
            env = {**self.environment(name), "WORKERS": "1", "WORKER_CONCURRENCY": "4"}
            self.worker_processes.append(Server(
                name, [sys.executable, "-m", "server.cli", "worker"], env, 0, self.workdir / f"{name}.log"
            ))
        self.start_api("A")  # first, so in Redis mode it takes relay slot 1
        self.start_api("B")
        for worker in self.worker_processes:
            wait_for_line(worker, WORKER_READY)

    def kill(self, name: str) -> None:
        process = self.api.pop(name).process
        process.kill()
        process.wait()

    def stop(self) -> None:
        for server in [*self.api.values(), *self.worker_processes]:
            server.stop()
        self.api.clear()
        self.worker_processes.clear()


def wait_for_line(server: Server, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log_tail(200):
        if server.process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{server.name} never printed {text!r}:\n{server.log_tail()}")
        time.sleep(0.1)


def redis_answers(url: str) -> bool:
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=1).close()
    except OSError:
        return False
    return True


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


# -- a subscriber ----------------------------------------------------------------------


class Subscriber:
    """One graphql-transport-ws socket with one subscription, noting when each payload arrives."""

    def __init__(self, websocket: ClientConnection, field_name: str) -> None:
        self.websocket = websocket
        self.field_name = field_name
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, port: int, token: str, query: str, field_name: str) -> Subscriber:
        websocket = await connect(f"ws://127.0.0.1:{port}/graphql", subprotocols=[Subprotocol(PROTOCOL)],
                                  open_timeout=30, max_size=None)
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        await websocket.send(orjson.dumps(init).decode())
        ack = orjson.loads(await asyncio.wait_for(websocket.recv(), 30))
        if ack.get("type") != "connection_ack":
            raise SystemExit(f"subscription refused: {ack}")
        await websocket.send(orjson.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}).decode())
        subscriber = cls(websocket, field_name)
        subscriber.reader = asyncio.create_task(subscriber._read())
        return subscriber

    async def _read(self) -> None:
        async for raw in self.websocket:
            at = time.time()
            message = orjson.loads(raw)
            if message.get("type") == "next":
                self.received.append((at, message["payload"]["data"][self.field_name]))
            elif message.get("type") in ("error", "complete"):
                print(f"  subscription ended: {message}", file=sys.stderr)
                return

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
        await self.websocket.close()

    async def until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True


# -- figures ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Latencies:
    count: int
    missing: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, delays_ms: Sequence[float], missing: int) -> Latencies:
        ordered = sorted(delays_ms)
        return cls(len(ordered), missing, percentile(ordered, 0.50), percentile(ordered, 0.90),
                   percentile(ordered, 0.99), ordered[-1] if ordered else 0.0)

    def line(self, target_ms: float) -> str:
        verdict = "ok" if self.p99_ms < target_ms and not self.missing else "MISSED"
        return (f"{self.count:>5} events  p50 {self.p50_ms:7.1f} ms  p90 {self.p90_ms:7.1f} ms  "
                f"p99 {self.p99_ms:7.1f} ms  max {self.max_ms:7.1f} ms  missing {self.missing}  "
                f"(target p99 < {target_ms:.0f} ms: {verdict})")


async def seed_characters(pool: asyncpg.Pool, user: uuid.UUID, count: int) -> list[uuid.UUID]:
    rows = await pool.fetch(
        "INSERT INTO characters (user_id, name, description) SELECT $1, 'Bench ' || n, 'A bench character.' "
        "FROM generate_series(1, $2) AS n RETURNING id",
        user, count,
    )
    return [row["id"] for row in rows]


# -- part 1: completion to receipt -----------------------------------------------------


async def completion_to_receipt(cluster: Cluster, pool: asyncpg.Pool, args: argparse.Namespace) -> Latencies:
    user = uuid.uuid4()
    token = issue_token(cluster.secret, user, ttl=timedelta(hours=2))
    characters = await seed_characters(pool, user, args.jobs)
    completed_at: dict[str, float] = {}

    def heard(connection: object, pid: int, channel: str, payload: object) -> None:
        event = orjson.loads(str(payload))
        if event.get("kind") == "job" and event.get("status") == "completed" and event.get("user") == str(user):
            completed_at.setdefault(event["id"], time.time())

    listener = await asyncpg.connect(cluster.dsn)
    await listener.add_listener(EVENTS_CHANNEL, heard)
    subscriber = await Subscriber.open(cluster.api["B"].port, token, PORTRAIT_JOBS, "portraitJobs")
    jobs: list[str] = []
    try:
        await asyncio.sleep(1.0)  # nothing says a subscription is live; let it settle
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cluster.api['A'].port}", timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            started = time.monotonic()
            for number, character in enumerate(characters):
                await asyncio.sleep(max(0.0, started + number / args.rate - time.monotonic()))
                response = await client.post("/graphql", json={"query": GENERATE, "variables": {"id": str(character)}})
                body = response.json()
                if "errors" in body:
                    raise SystemExit(f"generateCharacterPortrait failed: {body['errors']}")
                jobs.append(body["data"]["generateCharacterPortrait"]["id"])

        def receipts() -> dict[str, float]:
            return {data["id"]: at for at, data in subscriber.received if data["status"] == "COMPLETED"}

        await subscriber.until(lambda: len(receipts()) >= len(jobs), timeout=args.timeout + len(jobs) / args.rate)
        received = receipts()
    finally:
        await subscriber.close()
        await listener.close()
    delays = [max(0.0, received[job] - completed_at[job]) * 1000
              for job in jobs if job in received and job in completed_at]
    return Latencies.of(delays, missing=len(jobs) - len(delays))


# -- part 2: the relay leader killed ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """One update of a burst: when it committed, whether after the kill, and when B's subscriber had it."""

    committed: float
    after_kill: bool
    received: float | None


async def one_burst(cluster: Cluster, pool: asyncpg.Pool, subscriber: Subscriber, characters: Sequence[uuid.UUID],
                    kill: int, args: argparse.Namespace) -> list[Delivery]:
    """Updates at --burst-rate/s, A killed a third of the way in; each one's fate."""
    committed: dict[str, tuple[str, float]] = {}  # character -> (its new image, commit time)
    killed_at = 0.0
    started = time.monotonic()
    for number, character in enumerate(characters):
        await asyncio.sleep(max(0.0, started + number / args.burst_rate - time.monotonic()))
        if number == len(characters) // 3:
            cluster.kill("A")
            killed_at = time.time()
        url = f"https://bench.invalid/{kill}/{number}.png"
        await pool.execute("UPDATE characters SET image_url = $2 WHERE id = $1", character, url)
        committed[str(character)] = (url, time.time())

    def receipts() -> dict[str, float]:
        return {data["id"]: at for at, data in subscriber.received
                if data["id"] in committed and data["imageUrl"] == committed[data["id"]][0]}

    await subscriber.until(lambda: len(receipts()) >= len(committed), timeout=args.timeout)
    received = receipts()
    return [Delivery(at, at >= killed_at, received.get(character)) for character, (_, at) in committed.items()]


def latencies(deliveries: Sequence[Delivery]) -> Latencies:
    delays = [max(0.0, d.received - d.committed) * 1000 for d in deliveries if d.received is not None]
    return Latencies.of(delays, missing=len(deliveries) - len(delays))


async def relay_leader_kills(
    cluster: Cluster, pool: asyncpg.Pool, args: argparse.Namespace
) -> tuple[Latencies, Latencies]:
    """--kills bursts, each killing A (relay slot 1) and restarting it; (events after the kills, every event)."""
    user = uuid.uuid4()
    token = issue_token(cluster.secret, user, ttl=timedelta(hours=2))
    characters = await seed_characters(pool, user, args.burst)
    subscriber = await Subscriber.open(cluster.api["B"].port, token, IMAGES, "characterImageUpdated")
    every: list[Delivery] = []
    try:
        await asyncio.sleep(1.0)
        for kill in range(1, args.kills + 1):
            async with pool.acquire() as connection:
                slots = await count_held(connection)
            deliveries = await one_burst(cluster, pool, subscriber, characters, kill, args)
            every += deliveries
            after = latencies([d for d in deliveries if d.after_kill])
            print(f"  kill {kill}: {slots} relay slots held before it; {after.count} events after it, "
                  f"max {after.max_ms:.1f} ms, {after.missing} never heard")
            await asyncio.to_thread(cluster.start_api, "A")  # takes slot 1 again
    finally:
        await subscriber.close()
    return latencies([d for d in every if d.after_kill]), latencies(every)


# -- driving it ------------------------------------------------------------------------


async def run_mode(cluster: Cluster, args: argparse.Namespace, mode: str) -> bool:
    pool = await asyncpg.create_pool(cluster.dsn, min_size=2, max_size=4)
    ok = True
    try:
        print(f"  {load_average()}")
        figures = await completion_to_receipt(cluster, pool, args)
        print(f"  completion -> receipt on the other API process: {figures.line(TARGET_P99_MS)}")
        ok = figures.p99_ms < TARGET_P99_MS and not figures.missing
        if mode == "redis" and args.kills:
            print(f"  {load_average()}")
            after_kill, every = await relay_leader_kills(cluster, pool, args)
            print(f"  relay leader killed, events after each kill:  {after_kill.line(TARGET_KILL_P99_MS)}")
            print(f"  relay leader killed, every event of the bursts: {every.line(TARGET_KILL_P99_MS)}")
            ok = ok and after_kill.p99_ms < TARGET_KILL_P99_MS and not every.missing
    finally:
        await pool.close()
    return ok


def run_bench(args: argparse.Namespace, workdir: Path) -> int:
    modes = [mode for mode in args.modes.split(",") if mode]
    if "redis" in modes and not redis_answers(args.redis_url):
        print(f"Redis does not answer at {args.redis_url}: Redis mode skipped")
        modes.remove("redis")
    secret = secrets.token_urlsafe(30)
    ok = True
    with database(workdir) as (dsn, description):
        asyncio.run(migrate(dsn))
        print(f"database: {description}")
        for mode in modes:
            print(f"\n{mode}: API processes A and B, {args.workers} worker process(es)")
            cluster = Cluster(dsn, secret, workdir / mode, args.redis_url if mode == "redis" else None, args.workers)
            cluster.workdir.mkdir(parents=True)
            try:
                cluster.start()
                ok = asyncio.run(run_mode(cluster, args, mode)) and ok
            finally:
                cluster.stop()
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--modes", default="postgres,redis", help="postgres, redis or both (postgres,redis)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis for Redis mode")
    parser.add_argument("--jobs", type=int, default=200, help="jobs created through A (200)")
    parser.add_argument("--rate", type=float, default=10.0, help="jobs created per second (10)")
    parser.add_argument("--workers", type=int, default=2, help="`portraits worker` processes (2)")
    parser.add_argument("--kills", type=int, default=5, help="relay-leader kills in Redis mode (5; 0 skips)")
    parser.add_argument("--burst", type=int, default=300, help="updates per kill's burst (300)")
    parser.add_argument("--burst-rate", type=float, default=200.0, help="updates per second in a burst (200)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the last receipt (30)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"CPUs: {os.cpu_count()}; Python {platform.python_version()}; {load_average()}")
    return run_in_workdir("portraits-bench-failover-", lambda workdir: run_bench(args, workdir), timed=True)


if __name__ == "__main__":
    sys.exit(main())
