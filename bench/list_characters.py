"""How much does GraphQL cost on the hottest read? `characters(first: 100)` vs. a hand-written endpoint.

Prints figures; it is not a test. It starts a throw-away PostgreSQL (or uses
DATABASE_URL), seeds one user with --rows characters, then runs two
single-process uvicorn servers side by side:

- graphql:  the real server, ``python -m server.cli serve``;
- baseline: bench/baseline_app.py, the same token check, SQL and JSON shape
  without GraphQL (Starlette + asyncpg + orjson);

and drives each in turn from a separate, cheap load-generator process
(bench/loadgen.py) with --concurrency keep-alive connections for --duration
seconds after a warm-up. The ratio baseline/graphql is the price of the
GraphQL layer on this machine.

With --signed every character gets an image in the ``stored_objects`` catalog
(no file: signing only checks the catalog) and both servers also answer
``signedImageUrl {url expiresAt}``, signed with the same PUBLIC_URL and secret,
so the answers stay identical and the figures include the cost of signing.

    python bench/list_characters.py [--duration 10] [--concurrency 16] [--rows 1000] [--signed]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from devtools.embedded_postgres import EmbeddedPostgres, die_with_parent
from server.auth import issue_token
from storage.migrate import migrate

# The project is installed (`make bench`), so its packages import from anywhere; the root is the servers' cwd.
REPO_ROOT = Path(__file__).resolve().parent.parent

QUERY = "query { characters(first:100){edges{node{id name description}}} }"
SIGNED_QUERY = "query { characters(first:100){edges{node{id name description signedImageUrl{url expiresAt}}}} }"
# Both servers sign against this, so their URLs are byte-identical; nothing ever fetches it.
PUBLIC_URL = "http://bench.invalid"
PAGE_SIZE = 100
STARTUP_TIMEOUT = 60.0

FIRST_NAMES = [
    "Aria", "Bram", "Cassia", "Dorian", "Elowen", "Fenn", "Greta", "Hollis", "Isolde", "Jareth",
    "Kestrel", "Lysander", "Maren", "Nikolai", "Odessa", "Perrin", "Quill", "Rowena", "Soren", "Thea",
]
EPITHETS = [
    "the Cartographer", "of the Salt Marsh", "Ironwood", "the Quiet", "Ashborne", "of House Veyl",
    "the Unbound", "Starling", "the Tinker", "Greymantle",
]
# A description's words, drawn at random.
PROSE = (
    "a weathered traveller with silver-streaked hair and a soft voice who keeps an old brass compass "
    "close and speaks of distant harbours lanterns rain-soaked cobblestones forgotten libraries and "
    "the patient craft of mending broken clocks by candlelight while humming songs from a childhood "
    "spent beside the northern sea under restless skies"
)
WORDS = PROSE.split()


class Interrupted(Exception):
    """SIGTERM, turned into an exception so the finally blocks still clean up."""


@dataclass(frozen=True, slots=True)
class Figures:
    """What one load-generator run reported."""

    name: str
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    completed: int = 0  # responses that arrived inside the window: the requests server_cpu_s served
    server_cpu_s: float = 0.0  # the server process tree's CPU inside the window (when metered)
    db_cpu_s: float = 0.0  # the PostgreSQL tree's (embedded database only)


# -- setup ---------------------------------------------------------------------


def free_port() -> int:
    """A port the kernel just had free; the tiny race before uvicorn binds it is acceptable here."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def description_text(rng: random.Random, length: int) -> str:
    """Prose-like filler of about ``length`` characters, so rows weigh what real ones do."""
    words: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return (" ".join(words)[:length].rstrip() + ".").capitalize()


def image_key(user_id: uuid.UUID, n: int) -> str:
    """The ``image_url`` of the n-th seeded character, a user-library key under its owner's folder."""
    return f"user-library/{user_id}/{n}.png"


async def seed(dsn: str, user_id: uuid.UUID, rows: int, *, signed: bool = False) -> None:
    """``rows`` characters for one user, a second apart, so newest-first order is stable.

    With ``signed`` each also gets an ``image_url`` catalogued in ``stored_objects``, so it is signed.
    """
    rng = random.Random(42)
    now = datetime.now(UTC)
    records = [
        (
            user_id,
            f"{rng.choice(FIRST_NAMES)} {rng.choice(EPITHETS)}"[:100],
            description_text(rng, rng.randint(160, 240)),
            now - timedelta(seconds=i),
            image_key(user_id, i) if signed else None,
        )
        for i in range(rows)
    ]
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        async with connection.transaction():  # all or nothing: a failed seed leaves nothing to unseed
            await connection.executemany(
                "INSERT INTO characters (user_id, name, description, created_at, updated_at, image_url)"
                " VALUES ($1, $2, $3, $4, $4, $5)",
                records,
            )
            if signed:
                await connection.executemany(
                    "INSERT INTO stored_objects (key, size_bytes, content_type, etag)"
                    " VALUES ($1, 1000, 'image/png', '\"x\"')",
                    [(image_key(user_id, i),) for i in range(rows)],
                )
        if signed:
            await connection.execute("ANALYZE stored_objects")
        await connection.execute("ANALYZE characters")
    finally:
        await connection.close()


async def unseed(dsn: str, user_id: uuid.UUID) -> None:
    """Remove the benchmark user's rows (and catalogued images) from a database we do not own (DATABASE_URL)."""
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute("DELETE FROM characters WHERE user_id = $1", user_id)
        await connection.execute("DELETE FROM stored_objects WHERE key LIKE $1", f"user-library/{user_id}/%")
    finally:
        await connection.close()


@contextmanager
def database(workdir: Path) -> Iterator[tuple[str, str]]:
    """(dsn, description): DATABASE_URL when set, else a non-durable embedded PostgreSQL stopped on exit."""
    with database_process(workdir) as (dsn, description, _):
        yield dsn, description


@contextmanager
def database_process(workdir: Path) -> Iterator[tuple[str, str, int | None]]:
    """As ``database``, plus the embedded postmaster's pid (None for DATABASE_URL), to meter its CPU."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url, "DATABASE_URL", None
        return
    embedded = EmbeddedPostgres(workdir / "db", durable=False)
    server = embedded.start()
    try:
        yield server.dsn, f"embedded PostgreSQL {server.version}", server.pid
    finally:
        embedded.stop()


# -- servers ---------------------------------------------------------------------


class Server:
    """One uvicorn server subprocess, its log kept in a file so a failure can show it."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], port: int, log_path: Path) -> None:
        self.name = name
        self.port = port
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                args,
                cwd=REPO_ROOT,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches only us; we stop the servers in order
                preexec_fn=die_with_parent(signal.SIGTERM),  # noqa: PLW1509 - no threads yet
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def healthy(self) -> bool:
        """GET /healthz answers 200 (a server without that route overrides this)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_healthy(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Poll ``healthy`` until true; fail with the server's log if it exits or never gets there."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} server exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.healthy():
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name} server not healthy after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_graphql(
    port: int,
    dsn: str,
    secret: str,
    workdir: Path,
    *,
    extra_env: Mapping[str, str] | None = None,
    name: str = "graphql",
) -> Server:
    """The real server, exactly as `portraits serve` runs it (single process, uvicorn defaults).

    ``extra_env`` adds or overrides settings (bench/reads.py: no job workers, execution plans off).
    """
    env = {
        "DATABASE_URL": dsn,
        "JWT_SECRET": secret,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "warning",
        "PORTRAITS_DATA_DIR": str(workdir / "portraits-data"),
        "PUBLIC_URL": PUBLIC_URL,  # what signed URLs start with; the baseline gets the same
        **(extra_env or {}),
    }
    return Server(name, [sys.executable, "-m", "server.cli", "serve"], env, port, workdir / f"{name}.log")


def start_baseline(
    port: int, dsn: str, secret: str, workdir: Path, *, signed: bool = False, name: str = "baseline"
) -> Server:
    """The hand-written endpoint under the same uvicorn settings (auto loop and http: uvloop and httptools)."""
    args = [
        sys.executable, "-m", "uvicorn", "bench.baseline_app:app",
        "--host", "127.0.0.1", "--port", str(port),
        "--loop", "auto", "--http", "auto", "--lifespan", "on",
        "--log-level", "warning", "--no-server-header",
    ]
    env = {
        "BENCH_DSN": dsn,
        "BENCH_JWT_SECRET": secret,
        "BENCH_PUBLIC_URL": PUBLIC_URL,
        "BENCH_SIGNED": "1" if signed else "0",
    }
    return Server(name, args, env, port, workdir / f"{name}.log")


# -- checks and load ---------------------------------------------------------------


def fetch_page(port: int, body: bytes, token: str) -> Any:
    """One request outside the load, to check the answer and compare the two servers' data."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    if status != 200:
        raise SystemExit(f"port {port}: HTTP {status}: {raw[:300]!r}")
    return orjson.loads(raw)


def check_same_answer(graphql: Any, baseline: Any, expected: int) -> None:
    """Both servers must return the same page, or the comparison compares different work."""
    for name, payload in (("graphql", graphql), ("baseline", baseline)):
        edges = payload.get("data", {}).get("characters", {}).get("edges") if isinstance(payload, dict) else None
        if not isinstance(edges, list) or len(edges) != expected:
            raise SystemExit(f"{name}: expected {expected} edges, got {str(payload)[:300]}")
    if graphql != baseline:
        raise SystemExit("graphql and baseline answers differ; the baseline no longer does the same work")


def check_all_signed(payload: Any) -> None:
    """With --signed every node must carry a URL, or equal answers could both be nulls and measure no signing."""
    for edge in payload["data"]["characters"]["edges"]:
        signed = edge["node"].get("signedImageUrl")
        if not signed or not signed.get("url", "").startswith(PUBLIC_URL) or not signed.get("expiresAt"):
            raise SystemExit(f"graphql: a node has no signed image URL: {str(edge)[:300]}")


def run_load(
    server: Server,
    body_file: Path,
    token: str,
    args: argparse.Namespace,
    expected: int,
    *,
    expect_path: str | None = None,
    cpu_pids: Sequence[int] = (),
    db_pid: int | None = None,
    latencies_out: Path | None = None,
) -> Figures:
    """Drive one server from a separate load-generator process and read back its JSON figures.

    ``expect_path``, ``cpu_pids``, ``db_pid`` and ``latencies_out`` are passed on to bench/loadgen.py
    (where the checked list is; whose CPU to meter in the window; where to write the latencies).
    """
    command = [
        sys.executable, str(REPO_ROOT / "bench" / "loadgen.py"),
        "--port", str(server.port), "--path", "/graphql", "--body-file", str(body_file),
        "--header", f"Authorization: Bearer {token}",
        "--concurrency", str(args.concurrency), "--warmup", str(args.warmup), "--duration", str(args.duration),
        "--expect-edges", str(expected),
        *(["--expect-path", expect_path] if expect_path else []),
        *[option for pid in cpu_pids for option in ("--cpu-pid", str(pid))],
        *(["--db-pid", str(db_pid)] if db_pid is not None else []),
        *(["--latencies-out", str(latencies_out)] if latencies_out else []),
    ]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM),  # noqa: PLW1509 - no threads yet
    )
    try:
        out, err = process.communicate(timeout=args.warmup + args.duration + 60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise SystemExit(f"load generator failed against {server.name} ({process.returncode}): {err.decode().strip()}")
    if server.process.poll() is not None:
        raise SystemExit(f"{server.name} server died during the run:\n{server.log_tail()}")
    result = orjson.loads(out)
    return Figures(
        name=server.name,
        requests=result["requests"],
        errors=result["errors"],
        rps=result["rps"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        mean_ms=result["mean_ms"],
        max_ms=result["max_ms"],
        completed=result["completed"],
        server_cpu_s=result["server_cpu_s"],
        db_cpu_s=result["db_cpu_s"],
    )


# -- report ------------------------------------------------------------------------


def print_table(results: list[Figures]) -> None:
    print()
    print(
        f"{'server':<10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'max ms':>8} "
        f"{'requests':>9} {'errors':>7}"
    )
    for r in results:
        print(
            f"{r.name:<10} {r.rps:>9.1f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.mean_ms:>8.2f} {r.max_ms:>8.2f} "
            f"{r.requests:>9} {r.errors:>7}"
        )
    graphql, baseline = results
    if min(graphql.rps, baseline.rps, graphql.p50_ms, graphql.p99_ms) <= 0:
        return
    print(
        f"\nbaseline/graphql: {baseline.rps / graphql.rps:.2f}x req/s, "
        f"p50 {baseline.p50_ms / graphql.p50_ms:.2f}x, p99 {baseline.p99_ms / graphql.p99_ms:.2f}x "
        f"(GraphQL serves {graphql.rps / baseline.rps:.0%} of the baseline's throughput)"
    )


def positive(kind: type) -> Callable[[str], Any]:
    """An argparse type: ``kind`` of the argument, refused unless above zero."""
    def parse(raw: str) -> Any:
        value = kind(raw)
        if value <= 0:
            raise argparse.ArgumentTypeError("must be positive")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=positive(float), default=10.0, help="measured seconds per server (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before that (2)")
    parser.add_argument("--concurrency", type=positive(int), default=16, help="keep-alive connections (16)")
    parser.add_argument("--rows", type=positive(int), default=1000, help="characters seeded for the user (1000)")
    parser.add_argument(
        "--signed", action="store_true", help="give every character a stored image and also ask for signedImageUrl"
    )
    return parser


def _on_sigterm(signum: int, frame: object) -> None:
    raise Interrupted


def run_in_workdir(prefix: str, run: Callable[[Path], int], *, timed: bool = False) -> int:
    """``run`` in a fresh temporary folder, removed afterwards; Ctrl-C or SIGTERM exit 130 once cleaned up.

    The frame every benchmark script shares (SIGTERM becomes ``Interrupted``,
    so the ``finally`` blocks that stop servers and databases still run).
    """
    signal.signal(signal.SIGTERM, _on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    started = time.monotonic()
    try:
        return run(workdir)
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; cleaned up", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if timed:
            print(f"({time.monotonic() - started:.0f}s)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _on_sigterm)
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    print(
        f"CPUs: {cpus} (usable by this process: {usable}); Python {platform.python_version()} on {platform.machine()}"
    )
    mode = "signed" if args.signed else "plain"
    print(
        f"mode={mode} rows={args.rows} concurrency={args.concurrency} "
        f"warmup={args.warmup:g}s duration={args.duration:g}s"
    )
    workdir = Path(tempfile.mkdtemp(prefix="portraits-bench-"))
    servers: list[Server] = []
    user_id = uuid.uuid4()
    seeded_dsn: str | None = None
    try:
        with database(workdir) as (dsn, description):
            try:
                asyncio.run(migrate(dsn))
                asyncio.run(seed(dsn, user_id, args.rows, signed=args.signed))
                seeded_dsn = dsn
                images = " with catalogued images" if args.signed else ""
                print(f"database: {description}; seeded {args.rows} characters{images} for user {user_id}")

                secret = secrets.token_urlsafe(30)  # 40 characters, like a Supabase JWT secret
                token = issue_token(secret, user_id, ttl=timedelta(hours=1))
                body = orjson.dumps({"query": SIGNED_QUERY if args.signed else QUERY})
                body_file = workdir / "body.json"
                body_file.write_bytes(body)
                expected = min(args.rows, PAGE_SIZE)

                graphql = start_graphql(free_port(), dsn, secret, workdir)
                servers.append(graphql)
                baseline = start_baseline(free_port(), dsn, secret, workdir, signed=args.signed)
                servers.append(baseline)
                for server in servers:
                    server.wait_healthy()
                graphql_page = fetch_page(graphql.port, body, token)
                check_same_answer(graphql_page, fetch_page(baseline.port, body, token), expected)
                if args.signed:
                    check_all_signed(graphql_page)
                print("both servers answer 200 with the same", expected, "edges; measuring...")

                results = []
                for server in (graphql, baseline):
                    figures = run_load(server, body_file, token, args, expected)
                    print(f"  {server.name}: {figures.rps:.1f} req/s, {figures.errors} errors")
                    results.append(figures)
                print_table(results)
                if any(r.errors for r in results):
                    print("\nWARNING: some responses were not 200 (see the errors column)")
                    return 1
                return 0
            finally:
                for server in reversed(servers):
                    server.stop()
                if seeded_dsn is not None and os.environ.get("DATABASE_URL"):
                    asyncio.run(unseed(seeded_dsn, user_id))
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; cleaned up", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
