"""Does one server process hold up under minutes of mixed load? Prints figures; it is not a test.

It starts a throw-away PostgreSQL (or uses DATABASE_URL), seeds --subscribers
users with a character each (plus 20 users for the websocket churn), and
starts ONE ``portraits serve`` process with its in-process generation worker
(WORKERS=1) and the local provider and object folder, as bench/subscriptions.py
starts its server. The load comes from two separate processes (this file run
with --role), so it never runs on the server's event loop:

- ws: one websocket per subscriber user (graphql-transport-ws), each
  subscribed to ``characterImageUpdated { id imageUrl }``: every character of
  that user, those created during the run included. Every subscription is
  proven live first (one UPDATE of each seeded character, heard by all).
  Then, for the whole run, websocket churn: --churn-rate sockets a second
  (20 churn users in turn) open, authenticate, subscribe to their user's
  character, stay 0.2-2 s, and close (one in four aborted without a close
  handshake, as a phone losing its network does).
- http: --rate GraphQL operations a second over --concurrency keep-alive
  connections (bench/loadgen.py's request builder and parser), each for a
  random subscriber user: a page of 20 characters with signed image URLs, one
  character, a page of the library with signed thumbnails, createCharacter,
  updateCharacter (a new imageUrl each time: an image event its subscriber
  must hear); and --generation-rate generateCharacterPortrait a second, each
  polled (``job``) until it is completed. A character has at most one update
  or generation in flight, so the order of its changes is known.

After --warmup seconds plus --minutes of load, the http process stops
starting work and waits (up to --drain seconds) for its jobs to finish; then
--settle seconds later the subscribers stop. Printed, each against its
target with "ok" or "MISSED":

- requests/s overall and per operation, p50/p99 latency per operation (the
  operations started after the warm-up);
- errors by code over the whole run, warm-up included: HTTP statuses other
  than 200, GraphQL errors (extensions.code), client-side failures, errors
  sent to subscribers and churn sockets, subscriber sockets dropped (target 0);
- jobs lost or done twice, from the database: every job the run started must
  be ``completed`` with exactly one completed attempt in ``job_attempts``,
  one ``workspace_assets`` row and one ``user_library`` row, and no job may
  exist that the run did not start (target 0);
- events missed: every image change committed during the run to a live
  subscriber's character (each updateCharacter answered, each completed job's
  workspace then library path) must reach that subscriber, itself or a later
  state of the same character (the server coalesces a row's changes that
  wait, by design; how many were coalesced is shown) (target 0);
- the server's RSS after the warm-up and at the end of the load, both under
  load with every subscriber connected (target: growth under 10 %), with
  samples every --sample seconds in between, and the growth over the second
  half of the run alone (a leak keeps growing there; a high-water mark does
  not). The warm-up (60 s) covers the GC pacer's first full collection,
  which comes once 1,000 sockets have closed (50 s of churn at 20/s): before
  it, the RSS is still climbing to its working level (a 20 s warm-up read it
  mid-climb).

    python bench/soak.py [--minutes 10] [--subscribers 1000] [--rate 60] [--generation-rate 1] [--churn-rate 20]
    python bench/soak.py --minutes 1 --subscribers 200      # a short run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from list_characters import Server, run_in_workdir
from loadgen import ProtocolError, build_request, percentile, send
from subscriptions import (
    WARMUP_SUBSCRIBERS,
    CpuMeter,
    LoadProcess,
    Target,
    describe,
    emit,
    mb,
    raise_fd_limit,
    rss_bytes,
    run_async,
    run_with_server,
    subscribe_socket,
    tag_of,
    update_round,
    wait_quiet,
)

TARGET_ERRORS = 0
TARGET_LOST = 0
TARGET_MISSED = 0
TARGET_RSS_GROWTH = 0.10

QUERIES = {
    "characters": "query{characters(first:20){edges{node{id name imageUrl signedImageUrl{url}}}"
                  "pageInfo{hasNextPage endCursor}}}",
    "character": "query($id:ID!){character(id:$id){id name description imageUrl signedImageUrl{url}}}",
    "library": "query{libraryAssets(first:20){edges{node{id path signedThumbnailUrl{url}}}}}",
    "createCharacter": "mutation($i:CreateCharacterInput!){createCharacter(input:$i){id}}",
    "updateCharacter": "mutation($id:ID!,$i:UpdateCharacterInput!){updateCharacter(id:$id,input:$i){id imageUrl}}",
    "generateCharacterPortrait": "mutation($c:ID!){generateCharacterPortrait(input:{characterId:$c}){id status}}",
    "job": "query($id:ID!){job(id:$id){status workspaceAsset{path} libraryAsset{path}}}",
}
FIELDS = {"library": "libraryAssets"}  # the answer's field, where it is not named as the operation
# Shares of --rate (generations and job polls come on top, at their own pace).
MIX = {"characters": 30, "character": 25, "library": 15, "createCharacter": 5, "updateCharacter": 25}
SUBSCRIBER_QUERY = "subscription{characterImageUpdated{id imageUrl}}"
CHURN_QUERY = "subscription($c:ID){characterImageUpdated(characterId:$c){id imageUrl}}"
LIVE_TAG = "soak-live"
REQUEST_TIMEOUT = 30.0
IDLE_RECONNECT = 4.0  # the server closes a keep-alive connection idle for 5 s (KEEP_ALIVE_TIMEOUT_SECONDS)
POLL_SECONDS = 0.5  # how often each outstanding job is polled
CHURN_PER_USER = 10  # churn sockets open at once per churn user (MAX_WEBSOCKETS_PER_USER is 20)
CHURN_HOLD = (0.2, 2.0)
CHURN_ABORT_SHARE = 0.25
# bench/subscriptions.py's server with its in-process generation worker back on, as `portraits serve` runs by
# default (its socket caps already leave 1,000 sockets of room for the churn and the HTTP connections).
SERVER_ENV = {"WORKERS": "1"}


# -- the http load process (python bench/soak.py --role http ...) ---------------------------


class RequestFailed(Exception):
    """No HTTP answer: the connection failed or the request timed out."""


class Client:
    """One keep-alive connection, reopened when it failed or sat idle long enough for the server to close it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.last_used = 0.0

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None

    async def call(self, query: str, variables: dict[str, Any], token: str) -> tuple[int, Any]:
        body = orjson.dumps({"query": query, "variables": variables})
        request = build_request("127.0.0.1", self.port, "/graphql", body, [f"Authorization: Bearer {token}"])
        if self.streams is not None and time.monotonic() - self.last_used > IDLE_RECONNECT:
            self.close()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                if self.streams is None:
                    self.streams = await asyncio.open_connection("127.0.0.1", self.port)
                status, raw = await send(*self.streams, request)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError) as error:
            self.close()
            raise RequestFailed(describe(error)) from None
        self.last_used = time.monotonic()
        try:
            return status, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return status, None


@dataclass
class User:
    user_id: str
    token: str
    characters: list[str]


@dataclass
class Tally:
    """Latencies of the operations started after the warm-up; errors over the whole run."""

    measure_from: float
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)  # "operation CODE"

    def record(self, operation: str, started: float, finished: float, codes: Sequence[str]) -> None:
        if started >= self.measure_from:
            self.latencies[operation].append((finished - started) * 1000)
        for code in codes:
            self.errors[f"{operation} {code}"] += 1


@dataclass
class HttpLoad:
    port: int
    users: list[User]
    tally: Tally
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    busy: set[str] = field(default_factory=set)  # characters with an update or a generation in flight
    changes: list[tuple[str, str, float, list[str]]] = field(default_factory=list)  # (user, character, t, values)
    jobs: dict[str, tuple[User, str]] = field(default_factory=dict)  # every job started: id -> (user, character)
    outstanding: set[str] = field(default_factory=set)
    finished: Counter[str] = field(default_factory=Counter)  # job status at the end of polling
    sequence: int = 0

    async def call(self, client: Client, operation: str, variables: dict[str, Any], user: User) -> Any:
        """The operation's field, or None after recording why it failed."""
        started = time.monotonic()
        codes: list[str] = []
        value: Any = None
        try:
            status, payload = await client.call(QUERIES[operation], variables, user.token)
        except RequestFailed as error:
            codes.append(f"no answer ({error})")
        else:
            errors = payload.get("errors") if isinstance(payload, dict) else None
            if errors:
                codes += [str((e.get("extensions") or {}).get("code", "no code")) for e in errors]
            elif status != 200:
                codes.append(f"HTTP {status}")
            else:
                value = ((payload or {}).get("data") or {}).get(FIELDS.get(operation, operation))
                if value is None:
                    codes.append("null data")
        self.tally.record(operation, started, time.monotonic(), codes)
        return value if not codes else None

    def pick_character(self) -> tuple[User, str] | None:
        for _ in range(20):
            user = self.rng.choice(self.users)
            character = self.rng.choice(user.characters)
            if character not in self.busy:
                return user, character
        return None

    async def one(self, client: Client) -> None:
        operation = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        if operation == "updateCharacter":
            await self.update(client)
            return
        user = self.rng.choice(self.users)
        if operation == "character":
            await self.call(client, operation, {"id": self.rng.choice(user.characters)}, user)
        elif operation == "createCharacter":
            self.sequence += 1
            created = await self.call(client, operation, {"i": {
                "name": f"Soak {self.sequence}", "description": "A character made under load.",
                "appearanceTags": ["soak", "bench"],
            }}, user)
            if created is not None:
                user.characters.append(created["id"])
        else:
            await self.call(client, operation, {}, user)

    async def update(self, client: Client) -> None:
        picked = self.pick_character()
        if picked is None:
            return
        user, character = picked
        self.busy.add(character)
        self.sequence += 1
        url = f"user-library/{user.user_id}/soak-{self.sequence}.png"
        try:
            updated = await self.call(client, "updateCharacter", {
                "id": character, "i": {"imageUrl": url, "description": f"Updated under load, {self.sequence}."},
            }, user)
            if updated is not None:
                self.changes.append((user.user_id, character, time.time(), [url]))
        finally:
            self.busy.discard(character)

    async def operations(self, rate: float, concurrency: int, until: float) -> None:
        """--rate operations a second in all, each connection taking the next due one."""
        start = time.monotonic()
        counter = iter(range(1 << 62))

        async def connection() -> None:
            client = Client(self.port)
            try:
                for index in counter:
                    due = start + index / rate
                    if due >= until:
                        return
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    await self.one(client)
            finally:
                client.close()

        await asyncio.gather(*(connection() for _ in range(concurrency)))

    async def generations(self, rate: float, until: float) -> None:
        client = Client(self.port)
        try:
            index = 0
            start = time.monotonic()
            while (due := start + index / rate) < until:
                index += 1
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                picked = self.pick_character()
                if picked is None:
                    continue
                user, character = picked
                self.busy.add(character)
                job = await self.call(client, "generateCharacterPortrait", {"c": character}, user)
                if job is None:
                    self.busy.discard(character)
                    continue
                self.jobs[job["id"]] = (user, character)
                self.outstanding.add(job["id"])
        finally:
            client.close()

    async def poll_jobs(self, stop: asyncio.Event, drain_until: float) -> None:
        """Poll every outstanding job until it ends; after ``stop``, until none is left or ``drain_until``."""
        client = Client(self.port)
        try:
            while not (stop.is_set() and (not self.outstanding or time.monotonic() > drain_until)):
                for job_id in sorted(self.outstanding):
                    user, character = self.jobs[job_id]
                    job = await self.call(client, "job", {"id": job_id}, user)
                    if job is None or job["status"] in ("QUEUED", "PROCESSING"):
                        continue
                    self.outstanding.discard(job_id)
                    self.finished[job["status"]] += 1
                    values = [asset["path"] for asset in (job["workspaceAsset"], job["libraryAsset"]) if asset]
                    if values:
                        self.changes.append((user.user_id, character, time.time(), values))
                    self.busy.discard(character)
                await asyncio.sleep(POLL_SECONDS)
        finally:
            client.close()

    async def run(self, args: dict[str, Any]) -> dict[str, Any]:
        seconds = args["warmup"] + args["seconds"]
        started = time.monotonic()
        until = started + seconds
        self.tally.measure_from = started + args["warmup"]
        stop = asyncio.Event()
        poller = asyncio.create_task(self.poll_jobs(stop, until + args["drain"]))
        await asyncio.gather(
            self.operations(args["rate"], args["concurrency"], until),
            self.generations(args["generation_rate"], until),
        )
        load_seconds = time.monotonic() - started
        stop.set()
        await poller
        return {
            "load_seconds": load_seconds,
            "measured_seconds": max(load_seconds - args["warmup"], 1e-9),
            "latencies": self.tally.latencies,
            "errors": self.tally.errors,
            "changes": self.changes,
            "jobs": {job_id: [user.user_id, character] for job_id, (user, character) in self.jobs.items()},
            "unfinished": sorted(self.outstanding),
            "finished": self.finished,
            "drain_seconds": time.monotonic() - started - load_seconds,
        }


async def http_main(args: argparse.Namespace) -> int:
    users = [User(u, t, [c]) for u, c, t in orjson.loads(Path(args.users).read_bytes())]
    emit({"ready": True})
    while line := await asyncio.to_thread(sys.stdin.readline):
        command = orjson.loads(line)
        if command["cmd"] == "run":
            load = HttpLoad(args.port, users, Tally(measure_from=float("inf")))
            emit(await load.run(command))
        elif command["cmd"] == "exit":
            emit({"closed": 0})
            break
        else:
            emit({"error": f"unknown command {command['cmd']!r}"})
    return 0


# -- the websocket load process (python bench/soak.py --role ws ...) -------------------------


@dataclass
class WsLoad:
    url: str
    subscribers: list[tuple[str, str, str]]  # (user, character, token)
    churn_users: list[tuple[str, str, str]]
    rng: random.Random = field(default_factory=lambda: random.Random(11))
    sockets: list[ClientConnection] = field(default_factory=list)
    receipts: dict[str, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))  # character ->
    errors: Counter[str] = field(default_factory=Counter)  # what subscribers and churn sockets were told or suffered
    dropped: int = 0
    closing: bool = False
    churn_task: asyncio.Task[None] | None = None
    churn: Counter[str] = field(default_factory=Counter)

    async def listen(self, websocket: ClientConnection) -> None:
        try:
            async for raw in websocket:
                at = time.time()
                message = orjson.loads(raw)
                kind = message.get("type")
                if kind == "next":
                    payload = message.get("payload") or {}
                    item = (payload.get("data") or {}).get("characterImageUpdated")
                    if payload.get("errors") or not item:
                        self.errors[f"subscriber next: {error_codes(payload.get('errors'))}"] += 1
                    else:
                        self.receipts[item["id"]].append((at, item["imageUrl"] or ""))
                elif kind == "ping":
                    await websocket.send('{"type":"pong"}')
                elif kind in ("error", "complete"):
                    self.errors[f"subscriber {kind}: {error_codes(message.get('payload'))}"] += 1
                    return
        except ConnectionClosed as error:
            if not self.closing:
                self.errors[f"subscriber socket closed: {describe(error)}"] += 1
        if not self.closing:
            self.dropped += 1

    async def open_all(self, concurrency: int) -> dict[str, Any]:
        gate = asyncio.Semaphore(concurrency)
        failures: Counter[str] = Counter()
        failed: list[str] = []

        async def one(user: str, token: str) -> None:
            async with gate:
                try:
                    websocket = await subscribe_socket(self.url, "deflate", token, {"query": SUBSCRIBER_QUERY})
                except Exception as error:  # noqa: BLE001 - every way a connection fails is a figure
                    failures[describe(error)] += 1
                    failed.append(user)
                    return
            self.sockets.append(websocket)
            asyncio.create_task(self.listen(websocket))  # noqa: RUF006 - ends with its socket

        started = time.perf_counter()
        await asyncio.gather(*(one(user, token) for user, _, token in self.subscribers))
        gc.freeze()  # the long-lived sockets leave the collector's generations: collections stay short
        return {"opened": len(self.sockets), "failed": failed, "failures": failures,
                "seconds": time.perf_counter() - started}

    async def heard(self, tag: str, expect: int, timeout: float) -> dict[str, Any]:
        """The characters that received an image tagged ``tag``, once ``expect`` have or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            heard = [c for c, got in self.receipts.items() if any(tag_of(url) == tag for _, url in got)]
            if len(heard) >= expect or time.monotonic() > deadline:
                return {"heard": heard}
            await asyncio.sleep(0.1)

    async def churn_one(self, user: tuple[str, str, str], gate: asyncio.Semaphore) -> None:
        _, character, token = user
        async with gate:
            try:
                websocket = await subscribe_socket(
                    self.url, "deflate", token, {"query": CHURN_QUERY, "variables": {"c": character}}
                )
            except Exception as error:  # noqa: BLE001 - every way a connection fails is a figure
                self.errors[f"churn open: {describe(error)}"] += 1
                return
            self.churn["opened"] += 1
            try:
                async with asyncio.timeout(self.rng.uniform(*CHURN_HOLD)):
                    async for raw in websocket:
                        message = orjson.loads(raw)
                        if message.get("type") in ("error", "complete"):
                            self.errors[f"churn {message['type']}: {error_codes(message.get('payload'))}"] += 1
                        elif message.get("type") == "ping":
                            await websocket.send('{"type":"pong"}')
            except TimeoutError:
                pass
            except ConnectionClosed as error:
                self.errors[f"churn socket closed: {describe(error)}"] += 1
            if self.rng.random() < CHURN_ABORT_SHARE:
                websocket.transport.abort()
                self.churn["aborted"] += 1
            else:
                await websocket.close()
                self.churn["closed"] += 1

    async def run_churn(self, rate: float, seconds: float) -> None:
        gates = [asyncio.Semaphore(CHURN_PER_USER) for _ in self.churn_users]
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        index = 0
        while (due := start + index / rate) < start + seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            slot = index % len(self.churn_users)
            task = asyncio.create_task(self.churn_one(self.churn_users[slot], gates[slot]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            index += 1
        await asyncio.gather(*tasks)

    async def stop(self) -> dict[str, Any]:
        if self.churn_task is not None:
            await self.churn_task
        self.closing = True
        async with asyncio.timeout(60):
            await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        return {"receipts": self.receipts, "errors": self.errors, "dropped": self.dropped, "churn": self.churn}


def error_codes(errors: Any) -> str:
    """The extensions.code of each GraphQL error in a payload (a list, or one error), for counting."""
    items = errors if isinstance(errors, list) else [errors] if isinstance(errors, dict) else []
    codes = [str((e.get("extensions") or {}).get("code", "no code")) for e in items if isinstance(e, dict)]
    return ",".join(codes) or "no code"


async def ws_main(args: argparse.Namespace) -> int:
    raise_fd_limit()
    data = orjson.loads(Path(args.users).read_bytes())
    load = WsLoad(f"ws://127.0.0.1:{args.port}/graphql", [tuple(t) for t in data["subscribers"]],
                  [tuple(t) for t in data["churn"]])
    emit({"ready": True})
    while line := await asyncio.to_thread(sys.stdin.readline):
        command = orjson.loads(line)
        match command["cmd"]:
            case "open":
                emit(await load.open_all(command["concurrency"]))
            case "heard":
                emit(await load.heard(command["tag"], command["expect"], command["timeout"]))
            case "churn":
                load.churn_task = asyncio.create_task(load.run_churn(command["rate"], command["seconds"]))
                emit({"started": True})
            case "stop":
                emit(await load.stop())
            case "exit":
                emit({"closed": len(load.sockets)})
                break
            case other:
                emit({"error": f"unknown command {other!r}"})
    return 0


# -- this process: the server, the load processes, the checks ---------------------------------


async def start_child(role: str, port: int, users_file: Path, log_path: Path) -> LoadProcess:
    """This file again as a load process, driven by JSON lines as bench/subscriptions.py drives its own."""
    command = [sys.executable, str(Path(__file__).resolve()), "--role", role, "--port", str(port),
               "--users", str(users_file)]
    # the final replies carry every change and every receipt on one line
    return await LoadProcess.spawn(command, log_path, line_limit=1 << 28)


@dataclass
class JobCheck:
    started: int = 0
    completed: int = 0
    lost: list[str] = field(default_factory=list)  # started, not completed exactly once
    twice: list[str] = field(default_factory=list)  # more than one completed attempt, workspace or library row
    unknown: list[str] = field(default_factory=list)  # in the database, never started by the run
    attempts: Counter[str] = field(default_factory=Counter)


async def check_jobs(pool: asyncpg.Pool, started: dict[str, list[str]], users: Sequence[str]) -> JobCheck:
    rows = await pool.fetch(
        "SELECT j.id::text AS id, j.status,"
        " (SELECT count(*) FROM job_attempts a WHERE a.job_id = j.id AND a.outcome = 'completed') AS done,"
        " (SELECT count(*) FROM workspace_assets w WHERE w.job_id = j.id) AS workspace,"
        " (SELECT count(*) FROM user_library l WHERE l.source_job_id = j.id) AS library"
        " FROM jobs j WHERE j.user_id = ANY($1::uuid[])",
        [uuid.UUID(u) for u in users],
    )
    outcomes = await pool.fetch(
        "SELECT a.outcome, count(*) AS n FROM job_attempts a JOIN jobs j ON j.id = a.job_id"
        " WHERE j.user_id = ANY($1::uuid[]) GROUP BY a.outcome",
        [uuid.UUID(u) for u in users],
    )
    check = JobCheck(started=len(started), attempts=Counter({r["outcome"]: r["n"] for r in outcomes}))
    seen = {row["id"]: row for row in rows}
    for job_id in started:
        row = seen.get(job_id)
        if row is None or row["status"] != "completed" or min(row["done"], row["workspace"], row["library"]) < 1:
            check.lost.append(job_id)
        else:
            check.completed += 1
        if row is not None and max(row["done"], row["workspace"], row["library"]) > 1:
            check.twice.append(job_id)
    check.unknown = [job_id for job_id in seen if job_id not in started]
    return check


@dataclass
class EventCheck:
    changes: int = 0
    heard_exactly: int = 0
    coalesced: int = 0  # not received itself, a later state of the same character was
    missed: list[tuple[str, list[str]]] = field(default_factory=list)  # (character, values)
    not_followed: int = 0  # changes of characters whose subscriber was not live (left out)


def check_events(changes: Sequence[Sequence[Any]], receipts: dict[str, list[list[Any]]], live: set[str]) -> EventCheck:
    """Each change must reach its subscriber: itself or a later state of its character (ordered per character)."""
    check = EventCheck()
    by_character: dict[str, list[list[str]]] = defaultdict(list)
    for user, character, _, values in sorted(changes, key=lambda change: change[2]):
        if user not in live:
            check.not_followed += 1
            continue
        by_character[character].append(values)
    for character, sequence in by_character.items():
        received = {url for _, url in receipts.get(character, [])}
        for index, values in enumerate(sequence):
            check.changes += 1
            later = {value for group in sequence[index:] for value in group}
            if set(values) & received:
                check.heard_exactly += 1
            elif later & received:
                check.coalesced += 1
            else:
                check.missed.append((character, values))
    return check


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


@dataclass
class Samples:
    """The server's RSS every few seconds from the start of the load."""

    pid: int
    every: float
    points: list[tuple[float, int]] = field(default_factory=list)

    async def run(self) -> None:
        started = time.monotonic()
        while True:
            self.points.append((time.monotonic() - started, rss_bytes(self.pid)))
            await asyncio.sleep(self.every)

    def at(self, seconds: float) -> int:
        """The first sample at or after ``seconds`` (the last one if none)."""
        return next((rss for t, rss in self.points if t >= seconds), self.points[-1][1])

    def before(self, seconds: float) -> int:
        """The last sample at or before ``seconds``."""
        return next((rss for t, rss in reversed(self.points) if t <= seconds), self.points[0][1])


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} CPUs"


async def drive(server: Server, dsn: str, warm: Sequence[Target], targets: Sequence[Target], workdir: Path,
                args: argparse.Namespace) -> int:
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=8)
    users_file = workdir / "users.json"
    users_file.write_bytes(orjson.dumps({
        "subscribers": [(t.user_id, t.character_id, t.token) for t in targets],
        "churn": [(t.user_id, t.character_id, t.token) for t in warm],
    }))
    http_file = workdir / "http-users.json"
    http_file.write_bytes(orjson.dumps([(t.user_id, t.character_id, t.token) for t in targets]))
    ws: LoadProcess | None = None
    http: LoadProcess | None = None
    try:
        ws = await start_child("ws", server.port, users_file, workdir / "ws.log")
        print(f"opening {len(targets)} subscribers...")
        opened = await ws.request({"cmd": "open", "concurrency": 200}, timeout=300)
        print(f"  opened {opened['opened']} in {opened['seconds']:.1f}s"
              + (f"; failures: {opened['failures']}" if opened["failed"] else ""))
        failed = set(opened["failed"])
        connected = [t for t in targets if t.user_id not in failed]
        await update_round(pool, connected, LIVE_TAG, 500)
        heard = await ws.request({"cmd": "heard", "tag": LIVE_TAG, "expect": len(connected), "timeout": 30}, 90)
        heard_characters = set(heard["heard"])
        live = {t.user_id for t in connected if t.character_id in heard_characters}
        print(f"  {len(live)} proven live (heard an update of their character)")
        await wait_quiet(server.process.pid, timeout=30)

        http = await start_child("http", server.port, http_file, workdir / "http.log")
        seconds = args.minutes * 60
        total = args.warmup + seconds
        print(f"{load_average()} before the load")
        print(f"load: {args.warmup:g}s warm-up + {seconds:g}s measured; {args.rate:g} operations/s, "
              f"{args.generation_rate:g} generations/s, {args.churn_rate:g} churn sockets/s...")
        samples = Samples(server.process.pid, args.sample)
        sampler = asyncio.create_task(samples.run())
        meter = CpuMeter([server.process.pid, http.pid, ws.pid]).start()
        await ws.request({"cmd": "churn", "rate": args.churn_rate, "seconds": total}, 30)
        run = asyncio.create_task(http.request({
            "cmd": "run", "warmup": args.warmup, "seconds": seconds, "rate": args.rate,
            "concurrency": args.concurrency, "generation_rate": args.generation_rate, "drain": args.drain,
        }, timeout=total + args.drain + 120))
        while not run.done():
            await asyncio.wait([run], timeout=60)
            if run.done():
                break
            if server.process.poll() is not None:
                raise SystemExit(f"the server died ({server.process.returncode}):\n{server.log_tail()}")
            elapsed = samples.points[-1][0]
            print(f"  {elapsed:5.0f}s  server RSS {mb(samples.points[-1][1])}  {load_average()}")
        results = run.result()
        cpu = meter.fractions()
        machine = meter.machine()
        rss_start = samples.at(args.warmup)
        rss_end = samples.before(results["load_seconds"])
        sampler.cancel()
        await asyncio.sleep(args.settle)
        finished = await ws.request({"cmd": "stop"}, 180)
        await wait_quiet(server.process.pid, timeout=30)
        rss_quiet = rss_bytes(server.process.pid)
        jobs = await check_jobs(pool, results["jobs"], [t.user_id for t in targets])
        events = check_events(results["changes"], finished["receipts"], live)
    finally:
        for child in (http, ws):
            if child is not None:
                await child.stop()
        await pool.close()
    report(args, results, finished, jobs, events, (rss_start, rss_end, rss_quiet), samples, cpu, machine,
           subscribers=(len(targets), len(live)))
    problems = (sum(results["errors"].values()) + sum(finished["errors"].values()) + finished["dropped"]
                + len(jobs.lost) + len(jobs.twice) + len(jobs.unknown) + len(events.missed))
    return 1 if problems or rss_end > rss_start * (1 + TARGET_RSS_GROWTH) else 0


def report(args: argparse.Namespace, results: dict[str, Any], finished: dict[str, Any], jobs: JobCheck,
           events: EventCheck, rss: tuple[int, int, int], samples: Samples, cpu: list[float], machine: float,
           *, subscribers: tuple[int, int]) -> None:
    measured = results["measured_seconds"]
    print()
    print(f"measured {measured:.0f}s after a {args.warmup:g}s warm-up; {load_average()} at the end")
    print(f"{'operation':<27} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    total = 0
    everything: list[float] = []
    for operation in QUERIES:
        latencies = sorted(results["latencies"].get(operation, []))
        total += len(latencies)
        everything += latencies
        if latencies:
            print(f"{operation:<27} {len(latencies):>9} {len(latencies) / measured:>8.1f} "
                  f"{percentile(latencies, 0.5):>8.1f} {percentile(latencies, 0.99):>8.1f} {latencies[-1]:>8.1f}")
    everything.sort()
    print(f"{'all':<27} {total:>9} {total / measured:>8.1f} {percentile(everything, 0.5):>8.1f} "
          f"{percentile(everything, 0.99):>8.1f} {everything[-1] if everything else 0:>8.1f}")
    churn = finished["churn"]
    print(f"websocket churn: {churn.get('opened', 0)} sockets opened and subscribed "
          f"({churn.get('opened', 0) / results['load_seconds']:.1f}/s), {churn.get('closed', 0)} closed, "
          f"{churn.get('aborted', 0)} aborted")
    print(f"server CPU {cpu[0]:.0%} of a core, load processes {cpu[1]:.0%} (http) and {cpu[2]:.0%} (ws), "
          f"machine {machine:.0%} of all {os.cpu_count()} cores (shared with other work)")
    print()
    errors: Counter[str] = Counter(results["errors"]) + Counter(finished["errors"])
    if finished["dropped"]:
        errors["subscriber sockets dropped"] += finished["dropped"]
    error_count = sum(errors.values())
    print(f"errors                 {error_count}   target {TARGET_ERRORS}: {verdict(error_count <= TARGET_ERRORS)}")
    for name, count in errors.most_common(15):
        print(f"  {count:>6}  {name}")
    lost = len(jobs.lost) + len(jobs.unknown)
    print(f"jobs                   {jobs.started} started, {jobs.completed} completed exactly once "
          f"(drain {results['drain_seconds']:.0f}s; attempts by outcome: {dict(jobs.attempts)})")
    print(f"  lost                 {len(jobs.lost)} not completed + {len(jobs.unknown)} never started by the run   "
          f"target {TARGET_LOST}: {verdict(lost <= TARGET_LOST)}")
    print(f"  done twice           {len(jobs.twice)}   target {TARGET_LOST}: {verdict(len(jobs.twice) <= TARGET_LOST)}")
    for job_id in (jobs.lost + jobs.twice + jobs.unknown)[:5]:
        print(f"    e.g. job {job_id}")
    print(f"events                 {events.changes} image changes of {subscribers[1]} live subscribers' characters "
          f"({subscribers[1]} of {subscribers[0]} subscribers proven live; {events.not_followed} changes of others "
          f"left out): {events.heard_exactly} heard as such, {events.coalesced} coalesced into a later state")
    print(f"  missed               {len(events.missed)}   target {TARGET_MISSED}: "
          f"{verdict(len(events.missed) <= TARGET_MISSED)}")
    for character, values in events.missed[:5]:
        print(f"    e.g. character {character}: {values}")
    rss_start, rss_end, rss_quiet = rss
    growth = rss_end / rss_start - 1
    points = [rss for _, rss in samples.points]
    print(f"server RSS             {mb(rss_start)} after the warm-up, {mb(rss_end)} at the end of the load "
          f"({growth:+.1%})   target < {TARGET_RSS_GROWTH:.0%}: {verdict(growth < TARGET_RSS_GROWTH)}")
    half = samples.at(args.warmup + (results["load_seconds"] - args.warmup) / 2)
    print(f"  second half          {mb(half)} -> {mb(rss_end)} ({rss_end / half - 1:+.1%})")
    print(f"  over the run         min {mb(min(points))}, max {mb(max(points))}; {mb(rss_quiet)} once the load "
          f"stopped and the subscribers closed")
    step = max(1, len(samples.points) // 12)
    print("  samples              " + ", ".join(f"{t:.0f}s {rss / 1e6:.0f}" for t, rss in samples.points[::step]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="measured minutes of load (10)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds of load before measuring (60)")
    parser.add_argument("--subscribers", type=int, default=1000, help="websocket subscribers, one per user (1000)")
    parser.add_argument("--rate", type=float, default=60.0, help="queries and mutations per second (60)")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections for them (8)")
    parser.add_argument("--generation-rate", type=float, default=1.0, help="generateCharacterPortrait per second (1)")
    parser.add_argument("--churn-rate", type=float, default=20.0, help="churn sockets opened per second (20)")
    parser.add_argument("--drain", type=float, default=120.0, help="seconds to wait for the last jobs (120)")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds after the last job before the subscribers stop listening (5)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples (5)")
    # The load processes: this file run again by the benchmark, not by hand.
    parser.add_argument("--role", choices=("http", "ws"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--users", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.role == "http":
        return run_async(http_main(args))
    if args.role == "ws":
        return run_async(ws_main(args))
    if min(args.minutes, args.subscribers, args.rate, args.concurrency, args.generation_rate, args.churn_rate) <= 0:
        raise SystemExit("--minutes, --subscribers, --rate, --concurrency and the rates must be positive")
    print(f"CPUs: {os.cpu_count()}; Python {platform.python_version()}; RLIMIT_NOFILE {raise_fd_limit()}; "
          f"{args.subscribers} subscribers + {WARMUP_SUBSCRIBERS} churn users")
    return run_in_workdir(
        "portraits-bench-soak-",
        lambda workdir: run_with_server(args, workdir, count=args.subscribers, drive=drive,
                                        server_env=SERVER_ENV),
        timed=True,
    )


if __name__ == "__main__":
    sys.exit(main())
