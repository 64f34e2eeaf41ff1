"""Issue 17 point 4: what an HTTP GraphQL request costs around its execution, stage by stage.

Prints figures; it is not a test. In one process, on uvloop when installed,
the real app (``server/app.py: create_app``, its lifespan run over raw ASGI
messages) is called with raw ASGI ``http`` scopes, as uvicorn calls it, minus
uvicorn's own work (parsing the request off the socket, making the scope and
the task, writing the answer). The database is DATABASE_URL (migrated, one
user's --rows characters seeded and removed after) or a throw-away embedded
PostgreSQL. Two operations, POSTed with a bearer token:

- ``{ __typename }``: no resolver of ours, no database: nearly all of it is the path around execution;
- ``characters(first: 100) { edges { node { id name description } } }``: the issue's page;
- ``query($id: ID!) { character(id: $id) { id name description } }``: one character by id (a variable, the
  per-request data loader).

For each, three runs on apps of their own:

1. the whole request, unprobed: best of --batches batches of --rounds requests, µs per request;
2. Python function calls per request and the functions with the most own time (cProfile, which inflates
   time spent in calls but counts them exactly, whatever else the machine does);
3. the split by stage, from probes at the stages' doors (wall time and this thread's CPU time, each stage's
   own time, its inner stages taken out); the probes cost a little themselves, so their total is printed
   beside the unprobed one. The stages, outside in:

   middlewares      request ids, CORS, the websocket shortcut, the request counter, the request limits (body
                    read and replayed) and Starlette's own stack and router, up to the /graphql route; and
                    their wrappers of ``send`` on the way out
   auth             Starlette's AuthenticationMiddleware around the token check; ``token check``: our
                    ``BearerTokenBackend.authenticate`` (a repeated token: the verified-token cache)
   view             strawberry's ASGI view (its Request, request adapter, ``run``, the Response sent), less
                    the hooks below
   sub-response     ``get_sub_response``: the media type, GET cache headers
   context          ``get_context``: the request's ``Context``
   body parse       ``parse_http_body``: the request decoded (orjson, the spec's shape)
   persisted        ``PersistedQueries.resolve`` and ``keep_if_valid``
   schema           ``schema.execute`` less its stages: strawberry's execution context, extensions, results
   parse+validate   the parse and validation stages: the document cache's lookups, limits, variables
   execution        the execute stage: graphql-core or the compiled plan, resolvers, the database round trip
   result           ``process_result``: the result as the response's dict
   response         ``create_response`` less the encoding: headers, status
   JSON encoding    ``encode_json`` (orjson)

    DATABASE_URL=postgresql://... python bench/request_overhead.py [--rounds 2000] [--batches 5] [--rows 1000] \
        [--only typename,page,by-id]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import secrets
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import asyncpg
import orjson
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext

import server.app
from graph.schema import PortraitsSchema, build_schema
from list_characters import database_process, seed, unseed
from server.app import create_app
from server.auth import BearerTokenBackend, issue_token
from server.settings import Settings
from storage.migrate import migrate

try:
    import uvloop

    new_event_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    LOOP = "uvloop"
except ImportError:  # pragma: no cover - uvloop is optional
    new_event_loop = asyncio.new_event_loop
    LOOP = "asyncio"

TYPENAME = "{ __typename }"
PAGE = "query { characters(first: 100) { edges { node { id name description } } } }"
BY_ID = "query($id: ID!) { character(id: $id) { id name description } }"
PUBLIC_URL = "http://bench.invalid"
REPO_ROOT = Path(__file__).resolve().parent.parent
P = ParamSpec("P")
R = TypeVar("R")

# (label, inclusive probes, inner probes taken out): each stage's own time.
STAGES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("middlewares", ("total", "send"), ("auth",)),
    ("auth", ("auth",), ("view",)),
    ("  of which token check", ("authenticate",), ()),
    ("view (strawberry's)", ("view",), (
        "get_sub_response", "get_context", "parse_http_body", "execute_operation", "process_result",
        "create_response", "send",
    )),
    ("sub-response", ("get_sub_response",), ()),
    ("context", ("get_context",), ()),
    ("body parse", ("parse_http_body",), ()),
    ("persisted", ("resolve", "keep_if_valid"), ()),
    ("execute_operation (rest)", ("execute_operation",), ("resolve", "keep_if_valid", "schema")),
    ("schema (strawberry's)", ("schema",), ("parse", "validate", "execute")),
    ("parse+validate", ("parse", "validate"), ()),
    ("execution", ("execute",), ()),
    ("result", ("process_result",), ()),
    ("response", ("create_response",), ("encode_json",)),
    ("JSON encoding", ("encode_json",), ()),
)


class Probes:
    """Wall and thread CPU seconds spent inside each probe, summed over the requests run."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.on = False

    def add(self, name: str, wall: float, cpu: float) -> None:
        """Count the time since ``wall`` (``time.perf_counter``) and ``cpu`` (``time.thread_time``) to ``name``."""
        self.wall[name] += time.perf_counter() - wall
        self.cpu[name] += time.thread_time() - cpu

    def clear(self) -> None:
        self.wall.clear()
        self.cpu.clear()


PROBES = Probes()


def probed(name: str, method: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    async def timed(*args: P.args, **kwargs: P.kwargs) -> R:
        if not PROBES.on:
            return await method(*args, **kwargs)
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return await method(*args, **kwargs)
        finally:
            PROBES.add(name, wall, cpu)

    return timed


def probed_sync(name: str, method: Callable[P, R]) -> Callable[P, R]:
    def timed(*args: P.args, **kwargs: P.kwargs) -> R:
        if not PROBES.on:
            return method(*args, **kwargs)
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return method(*args, **kwargs)
        finally:
            PROBES.add(name, wall, cpu)

    return timed


class ProbedStage:
    """One of strawberry's stage context managers (``async with runner.parsing(): ...``), timed door to door."""

    def __init__(self, name: str, inner: Any) -> None:
        self.name = name
        self.inner = inner
        self.started = (0.0, 0.0)

    async def __aenter__(self) -> None:
        self.started = (time.perf_counter(), time.thread_time())
        await self.inner.__aenter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> bool | None:
        try:
            return bool(await self.inner.__aexit__(kind, error, trace))
        finally:
            if PROBES.on:
                PROBES.add(self.name, *self.started)


class ProbedRunner:
    """The schema's extensions runner, whichever it is, with its parse, validate and execute stages timed."""

    def __init__(self, runner: SchemaExtensionsRunner) -> None:
        self.runner = runner

    def parsing(self) -> ProbedStage:
        return ProbedStage("parse", self.runner.parsing())

    def validation(self) -> ProbedStage:
        return ProbedStage("validate", self.runner.validation())

    def executing(self) -> ProbedStage:
        return ProbedStage("execute", self.runner.executing())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)


def probed_schema() -> PortraitsSchema:
    """A schema like the app's, its ``execute`` and its stages probed."""
    schema = build_schema()
    unprobed_runner = schema.create_extensions_runner

    def runner(execution_context: ExecutionContext, extensions: list[Any]) -> Any:
        return ProbedRunner(unprobed_runner(execution_context, extensions))

    schema.create_extensions_runner = runner  # type: ignore[method-assign]
    schema.execute = probed("schema", schema.execute)  # type: ignore[method-assign]
    return schema


class ProbedView(server.app.PortraitsGraphQL):
    """The app's view, its hooks probed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.persisted.resolve = probed("resolve", self.persisted.resolve)  # type: ignore[method-assign]
        self.persisted.keep_if_valid = probed("keep_if_valid", self.persisted.keep_if_valid)  # type: ignore[method-assign]
        for name in ("get_sub_response", "get_context", "parse_http_body", "execute_operation", "process_result"):
            setattr(self, name, probed(name, getattr(self, name)))
        for name in ("create_response", "encode_json"):
            setattr(self, name, probed_sync(name, getattr(self, name)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # What the middlewares' send wrappers do with the answer counts as theirs, not the view's.
        await probed("view", super().__call__)(scope, receive, probed("send", send))


class ProbedAuthentication(AuthenticationMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await probed("auth", super().__call__)(scope, receive, send)


class ProbedBackend(BearerTokenBackend):
    async def authenticate(self, conn: Any) -> Any:
        return await probed("authenticate", super().authenticate)(conn)


@contextmanager
def probed_app_classes() -> Iterator[None]:
    """``create_app`` builds its view, authentication middleware and token backend from these probed classes."""
    names = ("PortraitsGraphQL", "AuthenticationMiddleware", "BearerTokenBackend")
    saved = {name: getattr(server.app, name) for name in names}
    probed_classes = (ProbedView, ProbedAuthentication, ProbedBackend)
    for name, probed_class in zip(names, probed_classes, strict=True):
        setattr(server.app, name, probed_class)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(server.app, name, value)


# -- raw ASGI ------------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[dict[str, Any]]:
    """The app's lifespan over raw ASGI messages, as uvicorn runs it; yields the state requests get a copy of."""
    state: dict[str, Any] = {}
    to_app: asyncio.Queue[Message] = asyncio.Queue()
    from_app: asyncio.Queue[Message] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.3"}, "state": state}

    async def run() -> None:
        await app(scope, to_app.get, from_app.put)

    task = asyncio.create_task(run())
    await to_app.put({"type": "lifespan.startup"})
    started = await from_app.get()
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"lifespan startup failed: {started}")
    try:
        yield state
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await from_app.get()
        await task


class Caller:
    """POSTs one GraphQL document to an app over raw ASGI, as uvicorn would hand it the request."""

    def __init__(
        self, app: ASGIApp, state: dict[str, Any], query: str, token: str, variables: dict[str, Any] | None = None
    ) -> None:
        self.app = app
        self.state = state
        self.body = orjson.dumps({"query": query} if variables is None else {"query": query, "variables": variables})
        self.headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"accept", b"application/graphql-response+json, application/json"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-length", str(len(self.body)).encode()),
        ]
        self.status = 0
        self.answer = b""

    async def __call__(self) -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000), "scheme": "http", "method": "POST",
            "root_path": "", "path": "/graphql", "raw_path": b"/graphql", "query_string": b"",
            "headers": self.headers, "state": self.state.copy(),
        }
        body: bytes | None = self.body

        async def receive() -> Message:
            nonlocal body
            if body is None:
                return {"type": "http.disconnect"}
            message = {"type": "http.request", "body": body, "more_body": False}
            body = None
            return message

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message["type"] == "http.response.body":
                self.answer = message.get("body", b"")

        await self.app(scope, receive, send)

    async def check(self, expected_edges: int | None) -> None:
        await self()
        data = orjson.loads(self.answer)
        if self.status != 200 or "errors" in data:
            raise SystemExit(f"HTTP {self.status}: {self.answer[:300]!r}")
        if expected_edges is not None and len(data["data"]["characters"]["edges"]) != expected_edges:
            raise SystemExit(f"expected {expected_edges} characters: {self.answer[:300]!r}")
        if "character" in data["data"] and not data["data"]["character"]:
            raise SystemExit(f"expected a character: {self.answer[:300]!r}")


async def per_request_us(call: Caller, rounds: int, batches: int) -> tuple[float, float]:
    """Wall and thread CPU µs per request, each the best batch's mean: the least disturbed by whatever else the
    machine runs (CPU time leaves out the waits for the database, and for other processes on a busy machine)."""
    best_wall = best_cpu = float("inf")
    for _ in range(batches):
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(rounds):
            await call()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.thread_time() - cpu)
    return best_wall / rounds * 1e6, best_cpu / rounds * 1e6


def package_of(filename: str) -> str:
    """Whose code a profiled function is: ours by package, a library by its top folder, the rest stdlib/C."""
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    for ours in ("server", "graph", "resolvers", "storage", "realtime", "observability", "bench"):
        if f"/{ours}/" in filename:
            return f"ours:{ours}"
    return "stdlib/builtins"


async def profile(call: Caller, rounds: int, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(rounds):
        await call()
    profiler.disable()
    stats = pstats.Stats(profiler)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]  # (untyped in typeshed)
    calls = sum(entry[1] for entry in raw.values())
    print(f"  Python calls per request: {calls / rounds:,.0f} (cProfile)")
    by_package: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for (filename, _, _), (_, ncalls, tottime, _, _) in raw.items():
        share = by_package[package_of(filename)]
        share[0] += ncalls
        share[1] += tottime
    print("  own time by package (profiled, µs per request; calls per request):")
    for package, (ncalls, tottime) in sorted(by_package.items(), key=lambda item: -item[1][1])[:10]:
        print(f"    {package:28s} {tottime / rounds * 1e6:8.1f} µs  {ncalls / rounds:7.0f} calls")
    print(f"  top {top} functions by own time (profiled µs per request, calls per request):")
    ranked = sorted(raw.items(), key=lambda item: -item[1][2])[:top]
    for (filename, line, name), (_, ncalls, tottime, _, _) in ranked:
        where = filename.split("site-packages/", 1)[-1].removeprefix(f"{REPO_ROOT}/")
        print(f"    {tottime / rounds * 1e6:7.1f} µs {ncalls / rounds:6.1f}x  {name} ({where}:{line})")


def print_stages(total_wall_s: float, requests: int) -> None:
    print(f"  {'stage':26s} {'wall µs':>8s} {'cpu µs':>8s}")
    shown_wall = 0.0
    for label, inclusive, inner in STAGES:
        wall = sum(PROBES.wall[name] for name in inclusive) - sum(PROBES.wall[name] for name in inner)
        cpu = sum(PROBES.cpu[name] for name in inclusive) - sum(PROBES.cpu[name] for name in inner)
        if not label.startswith(" "):
            shown_wall += wall
        print(f"  {label:26s} {wall / requests * 1e6:8.1f} {cpu / requests * 1e6:8.1f}")
    outside = shown_wall - (PROBES.wall["execute"])
    print(f"  {'sum (probed)':26s} {shown_wall / requests * 1e6:8.1f}   (outside execution: "
          f"{outside / requests * 1e6:.1f} µs)")
    print(f"  {'the probed loop, measured':26s} {total_wall_s / requests * 1e6:8.1f}")


async def stage_split(call: Caller, rounds: int, batches: int) -> None:
    """Probes on for the best of ``batches`` batches (the one whose wall time was least)."""
    best: tuple[float, dict[str, float], dict[str, float]] | None = None
    for _ in range(batches):
        PROBES.clear()
        PROBES.on = True
        started = time.perf_counter()
        total = probed("total", call.__call__)
        for _ in range(rounds):
            await total()
        elapsed = time.perf_counter() - started
        PROBES.on = False
        if best is None or elapsed < best[0]:
            best = (elapsed, dict(PROBES.wall), dict(PROBES.cpu))
    assert best is not None
    PROBES.clear()
    PROBES.wall.update(best[1])
    PROBES.cpu.update(best[2])
    print_stages(best[0], rounds)


def freeze() -> None:
    """As ``serve`` does after start-up (server/gc_pacer.py): what survived is kept out of the collector's walks."""
    gc.collect()
    gc.freeze()


async def measure(settings: Settings, token: str, character_id: uuid.UUID, args: argparse.Namespace) -> None:
    operations: tuple[tuple[str, str, str, dict[str, Any] | None, int | None], ...] = (
        ("typename", "{ __typename }", TYPENAME, None, None),
        ("page", "characters(first: 100) page", PAGE, None, 100),
        ("by-id", "character(id: $id) by id", BY_ID, {"id": str(character_id)}, None),
    )
    for name, title, query, variables, edges in operations:
        if name not in args.only.split(","):
            continue
        print(f"\n== {title}")
        app = create_app(settings)
        async with lifespan(app) as state:
            call = Caller(app, state, query, token, variables)
            await call.check(edges)
            for _ in range(200):  # warm: caches, plans, the pool's connections
                await call()
            freeze()
            wall, cpu = await per_request_us(call, args.rounds, args.batches)
            print(f"  whole request, unprobed: {wall:.1f} µs wall, {cpu:.1f} µs CPU "
                  f"(best of {args.batches} x {args.rounds})")
            await profile(call, max(args.rounds // 4, 100), args.top)
        with probed_app_classes():
            app = create_app(settings, schema=probed_schema())
        async with lifespan(app) as state:
            call = Caller(app, state, query, token, variables)
            await call.check(edges)
            for _ in range(200):
                await call()
            freeze()
            print("  by stage (probed; each stage's own time, per request):")
            await stage_split(call, args.rounds, args.batches)


async def some_character(dsn: str, user: uuid.UUID) -> uuid.UUID:
    """The id of one of ``user``'s seeded characters (the by-id operation's variable)."""
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        found: uuid.UUID = await connection.fetchval(
            "SELECT id FROM characters WHERE user_id = $1 ORDER BY created_at DESC LIMIT 1", user
        )
        return found
    finally:
        await connection.close()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="portraits-overhead-") as folder:
        workdir = Path(folder)
        with database_process(workdir) as (dsn, description, _):
            await migrate(dsn)
            user = uuid.uuid4()
            await seed(dsn, user, args.rows)
            try:
                character_id = await some_character(dsn, user)
                secret = secrets.token_hex(32)
                settings = Settings.from_environ({
                    "DATABASE_URL": dsn, "JWT_SECRET": secret, "PORTRAITS_DATA_DIR": str(workdir / "data"),
                    "PUBLIC_URL": PUBLIC_URL, "WORKERS": "0", "LOG_LEVEL": "warning",
                    "EXECUTION_PLANS": os.environ.get("EXECUTION_PLANS", "on"),
                })
                token = issue_token(secret, user, ttl=timedelta(hours=1))
                print(f"database: {description}; {args.rows} characters; loop: {LOOP}; "
                      f"EXECUTION_PLANS={'on' if settings.execution_plans else 'off'}")
                await measure(settings, token, character_id, args)
            finally:
                if os.environ.get("DATABASE_URL"):
                    await unseed(dsn, user)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2000, help="requests per batch")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--rows", type=int, default=1000, help="characters seeded")
    parser.add_argument("--top", type=int, default=25, help="functions listed from the profile")
    parser.add_argument("--only", default="typename,page,by-id", help="operations measured, comma-separated")
    arguments = parser.parse_args()
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main(arguments))
