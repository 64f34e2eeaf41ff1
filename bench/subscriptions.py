"""How many idle subscribers does one server process hold, and how soon do they hear a change?

Prints figures; it is not a test. It starts a throw-away PostgreSQL (or uses
DATABASE_URL), seeds one character for each of --subscribers users, starts ONE
server process (``python -m server.cli serve`` with WORKERS=0), and from a
separate load process (this file run with --load) opens one websocket per user
(graphql-transport-ws, each with its own user's token), each subscribed to
``characterImageUpdated(characterId:) { id imageUrl }`` of its character.

Figures:
- connect rate: subscribers opened per second, --connect-concurrency at a time;
- memory per subscriber: the server's RSS (VmRSS) with every subscriber idle,
  minus its RSS after a warm-up with none, divided by the subscriber count;
  shown right after subscribing and after one update each;
- the server's CPU while the subscribers idle;
- latency from commit to client receipt: this process updates every
  character's image_url once per round (--rounds per --rate) at that many
  updates/s and notes time.time() when each autocommitted UPDATE returns; the
  load process notes time.time() when the pushed ``next`` arrives (one machine,
  one clock). p50/p90/p99/max, updates not heard within --timeout, the CPU of
  the server, of the load process and of the whole machine during the round
  (is the server or the machine the limit?), and the server's RSS after it.

The load process offers permessage-deflate, as browsers do; --compression none
shows what the server saves without it.

A subscription is live once the server has read its character, and nothing
says so; so before measuring, a discarded update round (repeated for whoever
did not hear it) proves every subscription live.

--ramp adds --step subscribers at a time; after each step: prove the new ones
live, measure memory, run one update round at the first --rate. It stops when
a connection fails, an update is missed, the median update is over 100 ms
late, the server dies, or at --max (capped by RLIMIT_NOFILE: the load process
needs a file descriptor per socket), and prints the largest N that heard every
update and the largest with p99 under 100 ms.

The max and p99 columns catch the server's full garbage collections: with
hundreds of Python objects per subscriber, one can stall the process for
seconds, so a round's p99 depends on whether one landed in it (--rounds 3
shows it). This process and the load process never collect, so their own
pauses do not count against the server.

Targets (issue 12): 10,000 subscribers, p99 under 100 ms, at most 45 KB per subscriber with uvicorn's own
websocket protocol (the earlier 30 KB needed a websocket codec of our own, since removed).

    python bench/subscriptions.py [--subscribers 10000 | --quick] [--rate 1000[,2000,...]] [--rounds 1]
                                  [--compression none]
    python bench/subscriptions.py --ramp [--step 2500] [--max 20000] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import resource
import secrets
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from devtools.embedded_postgres import die_with_parent
from list_characters import PUBLIC_URL, Interrupted, Server, database, free_port, run_in_workdir
from loadgen import percentile
from server.auth import issue_token
from storage.migrate import migrate

REPO_ROOT = Path(__file__).resolve().parent.parent
SUBSCRIPTION = "subscription($c: ID){ characterImageUpdated(characterId: $c){ id imageUrl } }"
PROTOCOL = "graphql-transport-ws"
TARGET_SUBSCRIBERS = 10_000
TARGET_P99_MS = 100.0
TARGET_BYTES_PER_SUBSCRIBER = 45_000
# The ramp stops when even the median update is this late: the process no longer keeps up. A bad p99
# alone does not stop it: that is usually one full garbage collection landing in the round.
RAMP_GIVE_UP_P50_MS = 100.0

WARMUP_SUBSCRIBERS = 20  # opened and closed before the baseline RSS, so it includes the subscription code paths
UPDATERS = 8  # concurrent UPDATE connections in this process
LIVENESS_ATTEMPTS = 4
OPEN_TIMEOUT = 30.0  # per websocket: TCP + upgrade + connection_ack
COMMAND_SLACK = 60.0  # on top of a load-process command's own time, before we call it hung
FD_HEADROOM = 200  # descriptors kept for everything that is not a subscriber socket
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

T = TypeVar("T")


# -- small helpers ---------------------------------------------------------------------


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """uvloop when installed (as uvicorn uses it): cheaper for the load process and the updater."""
    try:
        import uvloop

        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


async def interruptible(coroutine: Coroutine[Any, Any, T]) -> T:
    """SIGTERM cancels the run, so its finally blocks clean up (a Python handler would raise in some loop callback)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await coroutine
    except asyncio.CancelledError:
        raise Interrupted from None
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard one (children inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


@dataclass
class CpuMeter:
    """CPU used since ``start`` by a set of processes (fractions of one core) and by the machine (of all cores)."""

    pids: Sequence[int]
    started_at: float = 0.0
    started_cpu: list[float] = field(default_factory=list)
    started_machine: tuple[float, float] = (0.0, 0.0)

    def start(self) -> CpuMeter:
        self.started_at = time.monotonic()
        self.started_cpu = [cpu_seconds(pid) for pid in self.pids]
        self.started_machine = machine_busy_seconds()
        return self

    def used(self) -> list[float]:
        """CPU seconds per process since ``start``."""
        return [cpu_seconds(pid) - before for pid, before in zip(self.pids, self.started_cpu, strict=True)]

    def fractions(self) -> list[float]:
        elapsed = max(time.monotonic() - self.started_at, 1e-9)
        return [used / elapsed for used in self.used()]

    def machine(self) -> float:
        """How busy all cores were since ``start``, 0..1."""
        busy, total = machine_busy_seconds()
        return (busy - self.started_machine[0]) / max(total - self.started_machine[1], 1e-9)


async def wait_quiet(pid: int, *, below: float = 0.10, window: float = 0.5, timeout: float = 60.0) -> None:
    """Until the process uses less than ``below`` of a core over ``window`` (or ``timeout``): its backlog is done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meter = CpuMeter([pid]).start()
        await asyncio.sleep(window)
        if meter.fractions()[0] < below:
            return


def image_url(user_id: str, tag: str) -> str:
    """A user-library key (not catalogued, so nothing is signed) whose file name says which round set it."""
    return f"user-library/{user_id}/{tag}.png"


def tag_of(url: str) -> str:
    return url.rpartition("/")[2].removesuffix(".png")


def kb(size: float) -> str:
    return f"{size / 1000:.1f} KB"


def mb(size: float) -> str:
    return f"{size / 1e6:.1f} MB"


# -- load process (python bench/subscriptions.py --load ...) -------------------------------


class HandshakeRefused(Exception):
    """The server did not answer connection_init with connection_ack."""


@dataclass
class LoadState:
    """One load process's subscribers and what they heard."""

    url: str
    compression: str | None
    jobs: list[tuple[str, str]]  # (character id, token)
    next_job: int = 0
    sockets: list[ClientConnection] = field(default_factory=list)
    listeners: set[asyncio.Task[None]] = field(default_factory=set)
    receipts: dict[str, dict[str, float]] = field(default_factory=dict)  # tag -> character id -> time.time()
    dropped: int = 0  # sockets closed under a live subscription
    ended: int = 0  # subscriptions the server ended (error / complete)
    bad_items: int = 0  # `next` messages with errors or the wrong character
    last_problem: str = ""
    closing: bool = False


def describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0][:120] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def open_subscriber(state: LoadState, character_id: str, token: str) -> ClientConnection:
    """Connect, authenticate in connection_init, subscribe; the subscription goes live once the server reads."""
    payload = {"query": SUBSCRIPTION, "variables": {"c": character_id}}
    return await subscribe_socket(state.url, state.compression, token, payload)


async def subscribe_socket(url: str, compression: str | None, token: str, payload: dict[str, Any]) -> ClientConnection:
    """One graphql-transport-ws socket: connect, connection_init with ``token``, subscribe (id "1") with ``payload``."""
    websocket = await connect(
        url,
        subprotocols=[Subprotocol(PROTOCOL)],
        compression=compression,
        ping_interval=None,  # browsers send no pings; the server pings every 20 s and we answer
        open_timeout=OPEN_TIMEOUT,
        close_timeout=2,
    )
    try:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        await websocket.send(orjson.dumps(init).decode())
        ack = orjson.loads(await asyncio.wait_for(websocket.recv(), OPEN_TIMEOUT))
        if ack.get("type") != "connection_ack":
            raise HandshakeRefused(str(ack)[:200])
        subscribe = {"id": "1", "type": "subscribe", "payload": payload}
        await websocket.send(orjson.dumps(subscribe).decode())
    except BaseException:
        websocket.transport.abort()
        raise
    return websocket


def note_next(state: LoadState, character_id: str, payload: dict[str, Any], at: float) -> None:
    item = (payload.get("data") or {}).get("characterImageUpdated")
    if payload.get("errors") or not item or item.get("id") != character_id:
        state.bad_items += 1
        state.last_problem = str(payload)[:200]
        return
    state.receipts.setdefault(tag_of(item["imageUrl"]), {}).setdefault(character_id, at)


async def listen(state: LoadState, character_id: str, websocket: ClientConnection) -> None:
    """Note the arrival time of every pushed item until the socket or the subscription ends."""
    try:
        async for raw in websocket:
            at = time.time()
            message = orjson.loads(raw)
            kind = message.get("type")
            if kind == "next":
                note_next(state, character_id, message.get("payload") or {}, at)
            elif kind == "ping":
                await websocket.send('{"type":"pong"}')
            elif kind in ("error", "complete"):
                state.ended += 1
                state.last_problem = str(message)[:200]
                return
    except ConnectionClosed as error:
        if not state.closing:
            state.last_problem = describe(error)
    if not state.closing:
        state.dropped += 1


async def open_batch(state: LoadState, count: int, concurrency: int) -> dict[str, Any]:
    """Open the next ``count`` subscribers, ``concurrency`` handshakes at a time."""
    jobs = state.jobs[state.next_job : state.next_job + count]
    state.next_job += len(jobs)
    gate = asyncio.Semaphore(concurrency)
    failures: Counter[str] = Counter()
    failed_ids: list[str] = []

    async def one(character_id: str, token: str) -> None:
        async with gate:
            try:
                websocket = await open_subscriber(state, character_id, token)
            except Exception as error:  # noqa: BLE001 - every way a connection fails is a figure
                failures[describe(error)] += 1
                failed_ids.append(character_id)
                return
        state.sockets.append(websocket)
        task = asyncio.create_task(listen(state, character_id, websocket))
        state.listeners.add(task)
        task.add_done_callback(state.listeners.discard)

    started = time.perf_counter()
    await asyncio.gather(*(one(character_id, token) for character_id, token in jobs))
    return {
        "requested": len(jobs),
        "failed_ids": failed_ids,
        "failures": dict(failures.most_common(5)),
        "seconds": time.perf_counter() - started,
        **status(state),
    }


async def collect(state: LoadState, tag: str, expect: int, timeout: float) -> dict[str, Any]:
    """Receipts of round ``tag`` once ``expect`` have arrived, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while len(state.receipts.get(tag, ())) < expect and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return {"receipts": state.receipts.pop(tag, {}), **status(state)}


def status(state: LoadState) -> dict[str, Any]:
    return {
        "open": len(state.sockets),
        "dropped": state.dropped,
        "ended": state.ended,
        "bad_items": state.bad_items,
        "last_problem": state.last_problem,
    }


async def close_all(state: LoadState) -> None:
    """Close politely (the server cleans up each subscription), abort whatever does not close in time."""
    state.closing = True
    gate = asyncio.Semaphore(500)

    async def close(websocket: ClientConnection) -> None:
        async with gate:
            await websocket.close()

    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(close(ws) for ws in state.sockets), return_exceptions=True)
    except TimeoutError:
        for websocket in state.sockets:
            websocket.transport.abort()


def emit(reply: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(reply).decode() + "\n")
    sys.stdout.flush()


async def load_main(args: argparse.Namespace) -> int:
    """Answer one JSON command per stdin line with one JSON line on stdout: open, collect, exit."""
    raise_fd_limit()
    # Thousands of client sockets make a full collection take long enough to pass for server latency;
    # this short-lived process creates little cyclic garbage, so it does without.
    gc.disable()
    jobs = [(str(c), str(t)) for c, t in orjson.loads(Path(args.jobs).read_bytes())]
    compression = None if args.compression == "none" else args.compression
    state = LoadState(url=f"ws://127.0.0.1:{args.port}/graphql", compression=compression, jobs=jobs)
    emit({"ready": True, "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0]})
    while line := await asyncio.to_thread(sys.stdin.readline):
        command = orjson.loads(line)
        match command["cmd"]:
            case "open":
                emit(await open_batch(state, command["count"], command["concurrency"]))
            case "collect":
                emit(await collect(state, command["tag"], command["expect"], command["timeout"]))
            case "exit":
                await close_all(state)
                emit({"closed": len(state.sockets)})
                break
            case other:
                emit({"error": f"unknown command {other!r}"})
    return 0


# -- this process's side of the load process ----------------------------------------


class LoadProcess:
    """The load process, driven over its stdin/stdout one JSON line at a time."""

    def __init__(self, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    @classmethod
    async def start(cls, port: int, jobs_file: Path, compression: str, log_path: Path) -> LoadProcess:
        command = [
            sys.executable, str(Path(__file__).resolve()), "--load",
            "--port", str(port), "--jobs", str(jobs_file), "--compression", compression,
        ]
        # a collect reply carries every receipt of a round on one line
        return await cls.spawn(command, log_path, line_limit=1 << 26)

    @classmethod
    async def spawn(cls, command: list[str], log_path: Path, *, line_limit: int) -> LoadProcess:
        """``command`` as a load process driven by JSON lines, once it has said it is ready; its stderr to
        ``log_path``, and ``line_limit`` the longest reply line it may send."""
        with open(log_path, "wb") as log:
            process = await asyncio.create_subprocess_exec(
                *command, cwd=REPO_ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                limit=line_limit, start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM),
            )
        load = cls(process, log_path)
        await load.reply(timeout=60)
        return load

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def reply(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            raise SystemExit(f"load process did not answer within {timeout:.0f}s:\n{self.log_tail()}") from None
        if not line:
            await self.process.wait()
            raise SystemExit(f"load process exited with {self.process.returncode}:\n{self.log_tail()}")
        answer: dict[str, Any] = orjson.loads(line)
        if "error" in answer:
            raise SystemExit(f"load process: {answer['error']}")
        return answer

    async def request(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(orjson.dumps(command) + b"\n")
        await self.process.stdin.drain()
        return await self.reply(timeout)

    async def open(self, count: int, concurrency: int) -> dict[str, Any]:
        batches = count / concurrency + 1
        return await self.request({"cmd": "open", "count": count, "concurrency": concurrency}, OPEN_TIMEOUT * batches)

    async def collect(self, tag: str, expect: int, timeout: float) -> dict[str, Any]:
        command = {"cmd": "collect", "tag": tag, "expect": expect, "timeout": timeout}
        return await self.request(command, timeout + COMMAND_SLACK)

    async def stop(self) -> None:
        if self.process.returncode is None:
            try:
                await self.request({"cmd": "exit"}, timeout=45)
                await asyncio.wait_for(self.process.wait(), 15)
            except (SystemExit, TimeoutError, OSError):
                pass
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


# -- database side -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """One subscriber: a user, their one character and their token."""

    user_id: str
    character_id: str
    token: str


async def seed(dsn: str, count: int, secret: str) -> list[Target]:
    """``count`` users with one character each, in one statement; tokens valid for two hours."""
    user_ids = [uuid.uuid4() for _ in range(count)]
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await connection.fetch(
            "INSERT INTO characters (user_id, name, description)"
            " SELECT u, 'Bench subscriber ' || n, 'A benchmark character waiting for its portrait.'"
            " FROM unnest($1::uuid[]) WITH ORDINALITY AS t(u, n) RETURNING user_id, id",
            user_ids,
        )
        await connection.execute("ANALYZE characters")
    finally:
        await connection.close()
    character_of = {row["user_id"]: row["id"] for row in rows}
    ttl = timedelta(hours=2)
    return [Target(str(u), str(character_of[u]), issue_token(secret, u, ttl=ttl)) for u in user_ids]


async def unseed(dsn: str, targets: Sequence[Target]) -> None:
    """Remove the seeded characters from a database we do not own (DATABASE_URL)."""
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute("DELETE FROM characters WHERE id = ANY($1::uuid[])", [t.character_id for t in targets])
    finally:
        await connection.close()


async def update_round(
    pool: asyncpg.Pool, targets: Sequence[Target], tag: str, rate: float
) -> tuple[dict[str, float], float]:
    """Set every target's image_url to its ``tag`` URL at ``rate`` per second.

    Returns the commit time per character and the achieved rate.
    """
    commits: dict[str, float] = {}
    schedule = iter(enumerate(targets))
    start = time.perf_counter() + 0.01

    async def updater() -> None:
        async with pool.acquire() as connection:
            for index, target in schedule:  # shared: each updater takes the next due update
                delay = start + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await connection.execute(
                    "UPDATE characters SET image_url = $2 WHERE id = $1",
                    uuid.UUID(target.character_id), image_url(target.user_id, tag),
                )
                commits[target.character_id] = time.time()  # autocommit: committed (and NOTIFY sent) by now

    async with asyncio.timeout(len(targets) / rate * 3 + 60):
        await asyncio.gather(*(updater() for _ in range(UPDATERS)))
    elapsed = time.perf_counter() - start
    return commits, len(targets) / max(elapsed, 1e-9)


# -- measurements --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoundFigures:
    rate: float
    achieved: float
    updates: int
    received: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    server_cpu: float  # fraction of one core, from the first update until the last receipt
    load_cpu: float
    machine_cpu: float  # fraction of all cores: is the machine itself the limit?
    rss_after: int  # the server's, once the round's last item was received
    server_cpu_ms_per_update: float

    @property
    def missing(self) -> int:
        return self.updates - self.received


@dataclass(frozen=True, slots=True)
class Population:
    """What the server looked like with a number of subscribers."""

    subscribers: int
    failed: int
    connect_rate: float
    rss_subscribed: int
    rss_idle: int  # after the liveness round (each subscriber has been sent one item)
    idle_cpu: float
    not_live: int
    per_subscriber_subscribed: float  # bytes: (RSS - baseline) / subscribers
    per_subscriber_idle: float


@dataclass
class Bench:
    """Everything one run drives: the server, the load process, the updater pool, and the figures so far."""

    args: argparse.Namespace
    server: Server
    pool: asyncpg.Pool
    load: LoadProcess
    baseline_rss: int
    live: list[Target] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    round_number: int = 0  # names each round's image URLs

    def check_server(self) -> None:
        if self.server.process.poll() is not None:
            raise SystemExit(f"the server died ({self.server.process.returncode}):\n{self.server.log_tail()}")

    async def add_subscribers(self, targets: Sequence[Target]) -> Population:
        """Open ``targets``' subscriptions, prove them live, and measure the server with them idle."""
        started = time.perf_counter()
        opened = await self.load.open(len(targets), self.args.connect_concurrency)
        seconds = time.perf_counter() - started
        self.check_server()
        failed = set(opened["failed_ids"])
        self.failures.update(opened["failures"])
        new = [t for t in targets if t.character_id not in failed]
        print(
            f"  opened {len(new)} of {len(targets)} in {seconds:.1f}s ({len(new) / seconds:.0f}/s)"
            + (f"; failures: {opened['failures']}" if failed else "")
        )
        await wait_quiet(self.server.process.pid)
        await asyncio.sleep(self.args.settle)
        rss_subscribed = rss_bytes(self.server.process.pid)
        not_live = await self.prove_live(new)
        self.live += new
        await wait_quiet(self.server.process.pid)
        meter = CpuMeter([self.server.process.pid]).start()
        await asyncio.sleep(self.args.idle)
        idle_cpu = meter.fractions()[0]
        rss_idle = rss_bytes(self.server.process.pid)
        count = max(len(self.live), 1)
        return Population(
            subscribers=len(self.live), failed=len(failed), connect_rate=len(new) / seconds,
            rss_subscribed=rss_subscribed, rss_idle=rss_idle, idle_cpu=idle_cpu, not_live=len(not_live),
            per_subscriber_subscribed=(rss_subscribed - self.baseline_rss) / count,
            per_subscriber_idle=(rss_idle - self.baseline_rss) / count,
        )

    async def prove_live(self, targets: Sequence[Target]) -> list[Target]:
        """Update each target until its subscriber hears it (results discarded); returns those that never did."""
        pending = list(targets)
        for attempt in range(LIVENESS_ATTEMPTS):
            if not pending:
                break
            tag = f"live{self.round_number}-{attempt}"
            await update_round(self.pool, pending, tag, self.args.rates[0])
            heard = (await self.load.collect(tag, len(pending), self.args.timeout))["receipts"]
            pending = [t for t in pending if t.character_id not in heard]
        self.round_number += 1
        if pending:
            print(f"  WARNING: {len(pending)} subscriptions never heard an update; left out of the figures")
        return pending

    async def measure_round(self, rate: float) -> RoundFigures:
        """One update per live subscriber at ``rate``/s; latency from each commit to its receipt."""
        tag = f"round{self.round_number}"
        self.round_number += 1
        meter = CpuMeter([self.server.process.pid, self.load.pid]).start()
        commits, achieved = await update_round(self.pool, self.live, tag, rate)
        reply = await self.load.collect(tag, len(commits), self.args.timeout)
        server_cpu, load_cpu = meter.fractions()
        machine_cpu = meter.machine()
        server_seconds = meter.used()[0]
        self.check_server()
        receipts: dict[str, float] = reply["receipts"]
        latencies = sorted((receipts[c] - commits[c]) * 1000 for c in commits if c in receipts)
        if reply["dropped"] or reply["ended"] or reply["bad_items"]:
            print(
                f"  WARNING: {reply['dropped']} sockets dropped, {reply['ended']} subscriptions ended, "
                f"{reply['bad_items']} bad items; last: {reply['last_problem']}"
            )
        return RoundFigures(
            rate=rate, achieved=achieved, updates=len(commits), received=len(latencies),
            p50_ms=percentile(latencies, 0.50), p90_ms=percentile(latencies, 0.90),
            p99_ms=percentile(latencies, 0.99), max_ms=latencies[-1] if latencies else 0.0,
            server_cpu=server_cpu, load_cpu=load_cpu, machine_cpu=machine_cpu,
            rss_after=rss_bytes(self.server.process.pid),
            server_cpu_ms_per_update=server_seconds * 1000 / max(len(commits), 1),
        )


# -- runs ---------------------------------------------------------------------------------


async def warm_up(
    port: int, pool: asyncpg.Pool, targets: Sequence[Target], jobs_file: Path, args: argparse.Namespace, log: Path
) -> None:
    """A few subscribers hear one update each and leave, so the baseline RSS includes the code they run."""
    jobs_file.write_bytes(orjson.dumps([(t.character_id, t.token) for t in targets]))
    load = await LoadProcess.start(port, jobs_file, args.compression, log)
    try:
        opened = await load.open(len(targets), len(targets))
        if opened["failed_ids"]:
            raise SystemExit(f"warm-up subscribers failed to connect: {opened['failures']}")
        await asyncio.sleep(1)
        await update_round(pool, targets, "warmup", 100)
        heard = (await load.collect("warmup", len(targets), args.timeout))["receipts"]
        if len(heard) != len(targets):
            raise SystemExit(f"warm-up: only {len(heard)} of {len(targets)} subscribers heard their update; {opened}")
    finally:
        await load.stop()


def print_round(figures: RoundFigures, prefix: str = "") -> None:
    print(
        f"{prefix}{figures.rate:>7.0f} {figures.achieved:>9.0f} {figures.received:>9} {figures.missing:>8} "
        f"{figures.p50_ms:>7.1f} {figures.p90_ms:>7.1f} {figures.p99_ms:>7.1f} {figures.max_ms:>8.1f} "
        f"{figures.server_cpu:>10.0%} {figures.server_cpu_ms_per_update:>10.2f} {figures.load_cpu:>8.0%} "
        f"{figures.machine_cpu:>11.0%} {figures.rss_after / 1e6:>8.1f}"
    )


ROUND_HEADER = (
    f"{'rate/s':>7} {'achieved':>9} {'received':>9} {'missing':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
    f"{'max ms':>8} {'server CPU':>10} {'CPU ms/upd':>10} {'load CPU':>8} {'machine CPU':>11} {'RSS MB':>8}"
)


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


async def run_fixed(bench: Bench, targets: Sequence[Target]) -> int:
    """N subscribers, then one round per rate; prints the summary table."""
    print(f"opening {len(targets)} subscribers, {bench.args.connect_concurrency} at a time...")
    population = await bench.add_subscribers(targets)
    rounds = []
    print("update rounds (one update per subscriber each):")
    print("  " + ROUND_HEADER)
    for rate in bench.args.rates:
        for _ in range(bench.args.rounds):
            figures = await bench.measure_round(rate)
            print_round(figures, "  ")
            rounds.append(figures)
            await wait_quiet(bench.server.process.pid)
    rss_after = rss_bytes(bench.server.process.pid)
    print_summary(bench, population, rounds, rss_after)
    problems = population.failed + population.not_live + sum(r.missing for r in rounds)
    return 1 if problems else 0


def print_summary(bench: Bench, population: Population, rounds: list[RoundFigures], rss_after: int) -> None:
    per_idle = population.per_subscriber_idle
    per_subscribed = population.per_subscriber_subscribed
    n = population.subscribers
    print()
    tried = population.subscribers + population.failed
    target = verdict(n >= TARGET_SUBSCRIBERS) if tried >= TARGET_SUBSCRIBERS else "not tried at this N"
    print(f"subscribers              {n} live ({population.failed} failed to connect, "
          f"{population.not_live} never heard)"
          f"   target {TARGET_SUBSCRIBERS}: {target}")
    print(f"connect rate             {population.connect_rate:.0f}/s "
          f"({bench.args.connect_concurrency} handshakes at a time)")
    print(f"server RSS               {mb(bench.baseline_rss)} before; {mb(population.rss_subscribed)} subscribed; "
          f"{mb(population.rss_idle)} after one update each; {mb(rss_after)} at the end")
    print(f"memory per subscriber    {kb(per_subscribed)} just subscribed, {kb(per_idle)} after one update"
          f"   target <= {kb(TARGET_BYTES_PER_SUBSCRIBER)}: "
          f"{verdict(max(per_idle, per_subscribed) <= TARGET_BYTES_PER_SUBSCRIBER)}")
    print(f"server CPU while idle    {population.idle_cpu:.1%} of a core over {bench.args.idle:g}s")
    if rounds:
        print("latency, commit -> client receipt:")
        print("  " + ROUND_HEADER)
        for figures in rounds:
            print_round(figures, "  ")
        passing = [
            rate for rate in {r.rate for r in rounds}
            if all(r.p99_ms < TARGET_P99_MS and r.missing == 0 for r in rounds if r.rate == rate)
        ]
        best = f"{max(passing):.0f}/s" if passing else "none of the rates run"
        print(f"highest rate with p99 < {TARGET_P99_MS:.0f} ms and nothing missed: {best}")
    print(f"compression: {bench.args.compression}; server and load CPU: fractions of one core; machine CPU: of all "
          f"{os.cpu_count()} cores (shared with PostgreSQL, the load process and this one)")


async def run_ramp(bench: Bench, targets: Sequence[Target], step: int) -> int:
    """Add ``step`` subscribers at a time, one round each, until something gives; prints the largest good N."""
    rate = bench.args.rates[0]
    steps: list[tuple[Population, RoundFigures]] = []
    largest_complete = 0
    reason = f"reached --max {len(targets)}"
    print(f"ramp: +{step} subscribers per step up to {len(targets)}, one round at {rate:.0f}/s each")
    for start in range(0, len(targets), step):
        batch = targets[start : start + step]
        print(f"step to {start + len(batch)}:")
        population = await bench.add_subscribers(batch)
        figures = await bench.measure_round(rate)
        steps.append((population, figures))
        print(f"  {population.subscribers} live, {kb(population.per_subscriber_idle)}/subscriber, "
              f"p99 {figures.p99_ms:.1f} ms, {figures.missing} missed, idle CPU {population.idle_cpu:.1%}")
        if population.failed or population.not_live:
            reason = (f"{population.failed} connections failed, {population.not_live} never heard "
                      f"at {start + len(batch)}")
            break
        if figures.missing:
            reason = f"{figures.missing} updates missed at {population.subscribers}"
            break
        largest_complete = population.subscribers
        if figures.p50_ms > RAMP_GIVE_UP_P50_MS:
            reason = f"p50 {figures.p50_ms:.0f} ms > {RAMP_GIVE_UP_P50_MS:.0f} ms at {population.subscribers}"
            break
        await wait_quiet(bench.server.process.pid)
    print()
    print(f"{'subscribers':>11} {'idle RSS':>10} {'per sub':>9} {'idle CPU':>8} {'conn/s':>7} " + ROUND_HEADER)
    for population, figures in steps:
        print(f"{population.subscribers:>11} {mb(population.rss_idle):>10} {kb(population.per_subscriber_idle):>9} "
              f"{population.idle_cpu:>8.1%} {population.connect_rate:>7.0f} ", end="")
        print_round(figures)
    good_p99 = [p.subscribers for p, f in steps if f.p99_ms < TARGET_P99_MS and f.missing == 0 and not p.failed]
    print(f"stopped: {reason}")
    print(f"largest N that heard every update: {largest_complete}")
    print(f"largest N with p99 < {TARGET_P99_MS:.0f} ms at {rate:.0f} updates/s: {max(good_p99) if good_p99 else 0}")
    if bench.failures:
        print(f"connection failures: {dict(bench.failures.most_common(5))}")
    return 0


# -- wiring ---------------------------------------------------------------------------------


def start_server(
    port: int, dsn: str, secret: str, workdir: Path, *, sockets: int, server_env: Mapping[str, str] | None = None
) -> Server:
    """``portraits serve`` as list_characters starts it, but with no generation workers in the process.

    Every socket comes from 127.0.0.1, so the per-address websocket cap and the
    connection cap are raised to hold ``sockets`` (plus HTTP and slack).
    ``server_env`` overrides any of that (bench/soak.py turns the workers back on).
    """
    room = sockets + 1000
    env = {
        "MAX_CONNECTIONS": str(max(room, 10_000)),
        "MAX_WEBSOCKETS_PER_ADDRESS": str(room),
        "DATABASE_URL": dsn,
        "JWT_SECRET": secret,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "warning",
        "WORKERS": "0",
        "PORTRAITS_DATA_DIR": str(workdir / "portraits-data"),
        "PUBLIC_URL": PUBLIC_URL,
        **(server_env or {}),
    }
    return Server("graphql", [sys.executable, "-m", "server.cli", "serve"], env, port, workdir / "server.log")


async def drive(
    server: Server, dsn: str, warm: Sequence[Target], targets: Sequence[Target], workdir: Path, args: argparse.Namespace
) -> int:
    gc.disable()  # as in the load process: a collection here would delay commit times and hide latency
    pool = await asyncpg.create_pool(dsn, min_size=UPDATERS, max_size=UPDATERS)
    load: LoadProcess | None = None
    try:
        await warm_up(server.port, pool, warm, workdir / "warm.json", args, workdir / "warm-load.log")
        await wait_quiet(server.process.pid)
        await asyncio.sleep(1)
        baseline = rss_bytes(server.process.pid)
        print(f"server RSS after warm-up, no subscribers: {mb(baseline)}")
        jobs_file = workdir / "jobs.json"
        jobs_file.write_bytes(orjson.dumps([(t.character_id, t.token) for t in targets]))
        load = await LoadProcess.start(server.port, jobs_file, args.compression, workdir / "load.log")
        bench = Bench(args=args, server=server, pool=pool, load=load, baseline_rss=baseline)
        if args.ramp:
            return await run_ramp(bench, targets, args.step)
        return await run_fixed(bench, targets)
    finally:
        if load is not None:
            await load.stop()
        await pool.close()


def fd_capacity() -> int:
    return raise_fd_limit() - FD_HEADROOM


def plan(args: argparse.Namespace) -> int:
    """How many subscribers this run needs (at most what the descriptor limit allows)."""
    wanted: int = args.max if args.ramp else args.subscribers
    capacity = fd_capacity()
    if wanted > capacity:
        print(f"note: RLIMIT_NOFILE allows {capacity + FD_HEADROOM} descriptors per process; "
              f"using {capacity} subscribers")
    return min(wanted, capacity)


Drive = Callable[[Server, str, Sequence[Target], Sequence[Target], Path, argparse.Namespace], Coroutine[Any, Any, int]]


def run_bench(args: argparse.Namespace, workdir: Path) -> int:
    return run_with_server(args, workdir, count=plan(args), drive=drive)


def run_with_server(
    args: argparse.Namespace, workdir: Path, *, count: int, drive: Drive, server_env: Mapping[str, str] | None = None
) -> int:
    """Seed ``count`` users (plus the warm-up ones), start one ``portraits serve``, and ``drive`` the load."""
    secret = secrets.token_urlsafe(30)
    with database(workdir) as (dsn, description):
        asyncio.run(migrate(dsn))
        started = time.perf_counter()
        seeded = asyncio.run(seed(dsn, count + WARMUP_SUBSCRIBERS, secret))
        print(f"database: {description}; seeded {len(seeded)} users with a character each "
              f"and their tokens in {time.perf_counter() - started:.1f}s")
        server = start_server(free_port(), dsn, secret, workdir, sockets=count + WARMUP_SUBSCRIBERS,
                              server_env=server_env)
        try:
            server.wait_healthy()
            warm, targets = seeded[:WARMUP_SUBSCRIBERS], seeded[WARMUP_SUBSCRIBERS:]
            return run_async(interruptible(drive(server, dsn, warm, targets, workdir, args)))
        finally:
            server.stop()
            if os.environ.get("DATABASE_URL"):
                asyncio.run(unseed(dsn, seeded))


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        value = kind(raw)
        if value <= 0:
            raise argparse.ArgumentTypeError("must be positive")
        return value

    return parse


def _rates(raw: str) -> list[float]:
    rates = [float(value) for value in raw.split(",") if value.strip()]
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError("a comma-separated list of positive updates per second")
    return rates


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--subscribers", type=_positive(int), default=TARGET_SUBSCRIBERS, help="N (10000)")
    parser.add_argument("--quick", action="store_true", help="N=1000 (ramp: steps of 500 up to 2000)")
    parser.add_argument("--rate", dest="rates", type=_rates, default=[1000.0],
                        help="updates/s, comma-separated for one round each (1000)")
    parser.add_argument("--rounds", type=_positive(int), default=1, help="update rounds per rate (1)")
    parser.add_argument("--connect-concurrency", type=_positive(int), default=200, help="handshakes at a time (200)")
    parser.add_argument("--timeout", type=_positive(float), default=10.0,
                        help="seconds after the last update before an unheard one counts as missing (10)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to wait after subscribing (2)")
    parser.add_argument("--idle", type=_positive(float), default=10.0, help="seconds of idle CPU measurement (10)")
    parser.add_argument("--compression", choices=("deflate", "none"), default="deflate",
                        help="offer permessage-deflate as browsers do (deflate), or not (none)")
    parser.add_argument("--ramp", action="store_true", help="add --step subscribers at a time until something gives")
    parser.add_argument("--step", type=_positive(int), default=2500, help="ramp step (2500)")
    parser.add_argument("--max", type=_positive(int), default=20_000, help="ramp cap (20000, within RLIMIT_NOFILE)")
    # The load process: this file run again by the benchmark, not by hand.
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--jobs", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.load:
        return run_async(load_main(args))
    if args.quick:
        args.subscribers = 1000
        args.step, args.max = 500, 2000
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    print(f"CPUs: {cpus} (usable by this process: {usable}); "
          f"Python {platform.python_version()} on {platform.machine()}; "
          f"RLIMIT_NOFILE {raise_fd_limit()}")
    mode = f"ramp +{args.step} to {args.max}" if args.ramp else f"{args.subscribers} subscribers"
    rates = ",".join(f"{r:g}" for r in args.rates)
    print(f"mode: {mode}; update rate(s) {rates}/s; compression {args.compression}")
    return run_in_workdir("portraits-bench-subs-", lambda workdir: run_bench(args, workdir))


if __name__ == "__main__":
    sys.exit(main())
