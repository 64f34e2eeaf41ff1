"""Issue 17's read benchmark: Portraits vs. its hand-written endpoint vs. PostGraphile, one run, interleaved rounds.

Prints figures; it is not a test. It starts a throw-away PostgreSQL (or uses DATABASE_URL), seeds one
user with --rows characters (each with a catalogued image, so signing has work), and starts, on that
one database, single-process servers that stay up for the whole run:

- portraits:    ``python -m server.cli serve`` (WORKERS=0: the read API alone, as the others are;
                --plans-off adds EXECUTION_PLANS=off);
- baseline:     bench/baseline_app.py, the same token check, SQL and JSON shape without GraphQL
                (a second instance with BENCH_SIGNED=1 for the signed query);
- postgraphile: PostGraphile 4 on Node, installed with npm into a cache folder on first use and skipped
                with a message when node or npm is missing or the install fails (bench/postgraphile.py
                says what its configuration checks and what it does not, next to ours).

Each server's page is checked to hold the same 100 characters (id, name, description) before anything
is measured. Then --rounds rounds of [portraits, baseline, postgraphile], each server driven alone for
--duration seconds (after --warmup) by bench/loadgen.py with --concurrency keep-alive connections,
so slow drift of the shared machine falls on every server alike. Per server, over all its rounds:
req/s, p50 and p99 of the merged latencies, and CPU per request: the server's process tree's CPU
(utime + stime from /proc, read by the load generator as the window opens and closes) divided by the
responses completed in the window; the embedded PostgreSQL's CPU per request beside it. Then the ratios
against the hand-written endpoint (req/s, CPU per request) and Portraits against PostGraphile, beside
issue 17's targets (req/s: Portraits >= 0.5x the endpoint plain, >= 0.33x signed, >= 1.0x PostGraphile).
Each round line shows the machine's load average: the machine is shared, and interleaving only spreads
the disturbance evenly, it does not remove it.

The same for ``signedImageUrl { url expiresAt }`` added, Portraits and the baseline only
(PostGraphile cannot sign URLs).

Then Portraits alone, CPU per request for:
- one character by id (``query($id: ID!){ character(id: $id){ id name description } }``, variables);
- ``{ __typename }`` with the token: what a request costs outside execution (routing, body parse,
  auth, context, JSON encoding);
- a subscription event: --subscribers websockets (graphql-transport-ws, ``characterImageUpdated``,
  each user its own character, driven by bench/subscriptions.py's load process) and --events-rounds
  rounds of one committed UPDATE per subscriber: server CPU / events delivered.

    python bench/reads.py [--duration 8] [--rounds 3] [--concurrency 16] [--rows 1000] [--plans-off]
                          [--no-postgraphile] [--subscribers 100] [--events-rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

import postgraphile
import subscriptions
from list_characters import (
    PAGE_SIZE,
    PUBLIC_URL,
    QUERY,
    SIGNED_QUERY,
    Figures,
    Server,
    check_all_signed,
    check_same_answer,
    database_process,
    fetch_page,
    free_port,
    positive,
    run_in_workdir,
    run_load,
    seed,
    start_baseline,
    start_graphql,
    unseed,
)
from loadgen import percentile
from server.auth import issue_token
from storage.migrate import migrate

BY_ID_QUERY = "query($id: ID!){ character(id:$id){ id name description } }"
TYPENAME_QUERY = "{ __typename }"
EDGES_PATH = "data.characters.edges"
EVENT_RATE = 200.0  # committed updates per second during a subscription round
EVENT_TIMEOUT = 10.0  # seconds to wait for a round's last event


@dataclass(frozen=True, slots=True)
class Contestant:
    """A server and the request that asks it for the page."""

    name: str
    server: Server
    body_file: Path
    expect_path: str = EDGES_PATH
    expected: int = PAGE_SIZE


@dataclass
class Tally:
    """One contestant's windows so far."""

    name: str
    windows: list[Figures] = field(default_factory=list)
    latencies_ns: list[int] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(w.requests for w in self.windows)

    @property
    def errors(self) -> int:
        return sum(w.errors for w in self.windows)

    def rps(self, duration: float) -> float:
        return self.requests / (duration * len(self.windows)) if self.windows else 0.0

    def cpu_ms(self) -> float:
        """Server CPU per completed request, over every window."""
        completed = sum(w.completed for w in self.windows)
        return sum(w.server_cpu_s for w in self.windows) * 1000 / completed if completed else 0.0

    def db_cpu_ms(self) -> float:
        completed = sum(w.completed for w in self.windows)
        return sum(w.db_cpu_s for w in self.windows) * 1000 / completed if completed else 0.0

    def p(self, fraction: float) -> float:
        return percentile(self.latencies_ns, fraction) / 1e6


# -- measuring --------------------------------------------------------------------------


def measure(
    contestant: Contestant, token: str, args: argparse.Namespace, db_pid: int | None, workdir: Path
) -> tuple[Figures, list[int]]:
    """One window on one server, its CPU metered: the figures and the window's latencies (ns)."""
    latencies_file = workdir / f"latencies-{contestant.name}.json"
    figures = run_load(
        contestant.server, contestant.body_file, token, args, contestant.expected,
        expect_path=contestant.expect_path, cpu_pids=[contestant.server.process.pid], db_pid=db_pid,
        latencies_out=latencies_file,
    )
    latencies: list[int] = orjson.loads(latencies_file.read_bytes())
    latencies_file.unlink()
    return figures, latencies


def interleave(
    contestants: Sequence[Contestant], token: str, args: argparse.Namespace, db_pid: int | None, workdir: Path
) -> list[Tally]:
    """--rounds rounds of every contestant in turn; each window's figures printed as it ends."""
    tallies = [Tally(c.name) for c in contestants]
    for number in range(1, args.rounds + 1):
        line = []
        for contestant, tally in zip(contestants, tallies, strict=True):
            figures, latencies = measure(contestant, token, args, db_pid, workdir)
            tally.windows.append(figures)
            tally.latencies_ns += latencies
            cpu = figures.server_cpu_s * 1000 / figures.completed if figures.completed else 0.0
            line.append(f"{contestant.name} {figures.rps:.0f} req/s {cpu:.2f} ms CPU")
        print(f"  round {number}: " + "; ".join(line) + f" (load average {os.getloadavg()[0]:.1f})")
    for tally in tallies:
        tally.latencies_ns.sort()
    return tallies


# -- report ---------------------------------------------------------------------------------


def print_tallies(tallies: Sequence[Tally], duration: float) -> None:
    print(
        f"\n{'server':<14} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>11} {'DB ms/req':>10} "
        f"{'requests':>9} {'errors':>7}"
    )
    for t in tallies:
        print(
            f"{t.name:<14} {t.rps(duration):>8.1f} {t.p(0.50):>8.2f} {t.p(0.99):>8.2f} {t.cpu_ms():>11.2f} "
            f"{t.db_cpu_ms():>10.2f} {t.requests:>9} {t.errors:>7}"
        )


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}x" if b > 0 else "n/a"


def against(target: float | None, value: float) -> str:
    """Issue 17's req/s target for a ratio, and whether this run meets it."""
    if target is None:
        return ""
    return f" (target >= {target:g}x: {'met' if value >= target else 'not met'})"


def print_ratios(
    tallies: Sequence[Tally], duration: float, *, baseline_target: float | None, opponent_target: float | None = None
) -> None:
    """Everyone against the hand-written endpoint, then Portraits against PostGraphile, with the issue's targets."""
    by_name = {t.name.split("-")[0]: t for t in tallies}
    baseline = by_name["baseline"]
    print()
    for t in tallies:
        if t is baseline:
            continue
        rps = t.rps(duration) / baseline.rps(duration) if baseline.rps(duration) else 0.0
        target = baseline_target if t.name.startswith("portraits") else None
        print(
            f"{t.name} / {baseline.name}: req/s {ratio(t.rps(duration), baseline.rps(duration))}{against(target, rps)}"
            f", CPU per request {ratio(t.cpu_ms(), baseline.cpu_ms())}"
        )
    portraits, opponent = by_name.get("portraits"), by_name.get("postgraphile")
    if portraits is not None and opponent is not None:
        rps = portraits.rps(duration) / opponent.rps(duration) if opponent.rps(duration) else 0.0
        print(
            f"portraits / postgraphile: req/s {ratio(portraits.rps(duration), opponent.rps(duration))}"
            f"{against(opponent_target, rps)}, CPU per request {ratio(portraits.cpu_ms(), opponent.cpu_ms())}"
        )


def print_single(name: str, figures: Figures) -> None:
    per_request = 1000 / figures.completed if figures.completed else 0.0
    print(
        f"  {name:<28} {figures.rps:>8.1f} req/s  p50 {figures.p50_ms:>6.2f} ms  p99 {figures.p99_ms:>6.2f} ms  "
        f"server CPU {figures.server_cpu_s * per_request:.3f} ms/request, DB {figures.db_cpu_s * per_request:.3f}  "
        f"({figures.requests} requests, {figures.errors} errors)"
    )


# -- checks -------------------------------------------------------------------------------


def nodes_of(payload: Any) -> list[Any]:
    return [edge["node"] for edge in payload["data"]["characters"]["edges"]]


def check_postgraphile(portraits_page: Any, opponent_page: Any) -> None:
    """PostGraphile's shape differs (a node list): its nodes must be ours, in the same order."""
    if postgraphile.nodes(opponent_page) != nodes_of(portraits_page):
        raise SystemExit(f"postgraphile answers another page: {str(opponent_page)[:300]}")


def check_refuses_forged_token(contestant: Contestant, user_id: uuid.UUID) -> None:
    """A token signed with another secret must not get the page: every server really checks the token."""
    forged = issue_token(secrets.token_urlsafe(30), user_id, ttl=timedelta(hours=1))
    request = urllib.request.Request(
        f"http://127.0.0.1:{contestant.server.port}/graphql",
        data=contestant.body_file.read_bytes(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {forged}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    answer = orjson.loads(raw) if raw else {}
    if status == 200 and not answer.get("errors"):
        raise SystemExit(f"{contestant.name} answered a forged token: {raw[:300]!r}")


def write_body(workdir: Path, name: str, payload: dict[str, Any]) -> Path:
    path = workdir / f"body-{name}.json"
    path.write_bytes(orjson.dumps(payload))
    return path


# -- subscription events ----------------------------------------------------------------------


async def subscription_events(server: Server, dsn: str, secret: str, workdir: Path, args: argparse.Namespace) -> None:
    """CPU per delivered event: --subscribers sockets, --events-rounds rounds of one update each."""
    targets = await subscriptions.seed(dsn, args.subscribers, secret)
    pool = await asyncpg.create_pool(dsn, min_size=subscriptions.UPDATERS, max_size=subscriptions.UPDATERS)
    load: subscriptions.LoadProcess | None = None
    try:
        jobs_file = workdir / "subscribers.json"
        jobs_file.write_bytes(orjson.dumps([(t.character_id, t.token) for t in targets]))
        load = await subscriptions.LoadProcess.start(server.port, jobs_file, "deflate", workdir / "subs-load.log")
        opened = await load.open(len(targets), 50)
        if opened["failed_ids"]:
            raise SystemExit(f"subscribers failed to connect: {opened['failures']}")
        options = argparse.Namespace(rates=[EVENT_RATE], timeout=EVENT_TIMEOUT)
        bench = subscriptions.Bench(args=options, server=server, pool=pool, load=load, baseline_rss=0)
        not_live = await bench.prove_live(targets)  # also the warm-up: every subscriber has had one event
        bench.live = [t for t in targets if t not in not_live]
        await subscriptions.wait_quiet(server.process.pid)
        cpu_s = 0.0
        delivered = updates = 0
        for _ in range(args.events_rounds):
            figures = await bench.measure_round(EVENT_RATE)
            cpu_s += figures.server_cpu_ms_per_update * figures.updates / 1000
            delivered += figures.received
            updates += figures.updates
        per_event = cpu_s * 1000 / delivered if delivered else 0.0
        print(
            f"  subscription event           {len(bench.live)} subscribers, {updates} updates at {EVENT_RATE:.0f}/s, "
            f"{delivered} events delivered: server CPU {per_event:.3f} ms/event"
        )
    finally:
        if load is not None:
            await load.stop()
        await pool.close()
        if os.environ.get("DATABASE_URL"):
            await subscriptions.unseed(dsn, targets)


# -- the run ------------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> int:
    cli = None if args.no_postgraphile else postgraphile.install()
    if cli is not None:
        print(postgraphile.describe(cli))
    servers: list[Server] = []
    user_id = uuid.uuid4()
    with database_process(workdir) as (dsn, description, db_pid):
        asyncio.run(migrate(dsn))
        asyncio.run(seed(dsn, user_id, args.rows, signed=True))
        try:
            print(f"database: {description}; seeded {args.rows} characters with catalogued images for {user_id}")
            secret = secrets.token_urlsafe(30)
            token = issue_token(secret, user_id, ttl=timedelta(hours=2))
            portraits_env = {"WORKERS": "0", **({"EXECUTION_PLANS": "off"} if args.plans_off else {})}
            portraits = start_graphql(free_port(), dsn, secret, workdir, extra_env=portraits_env, name="portraits")
            servers.append(portraits)
            baseline = start_baseline(free_port(), dsn, secret, workdir, name="baseline")
            servers.append(baseline)
            signed_baseline = start_baseline(free_port(), dsn, secret, workdir, signed=True, name="baseline-signed")
            servers.append(signed_baseline)
            for server in servers:
                server.wait_healthy()
            opponent = None if cli is None else start_opponent(cli, dsn, secret, workdir)
            if opponent is not None:
                servers.append(opponent)
            return measure_all(args, workdir, dsn, db_pid, secret, token, user_id, portraits, baseline,
                               signed_baseline, opponent)
        finally:
            for server in reversed(servers):
                server.stop()
            if os.environ.get("DATABASE_URL"):
                asyncio.run(unseed(dsn, user_id))


def start_opponent(cli: Path, dsn: str, secret: str, workdir: Path) -> Server | None:
    """PostGraphile up and answering, or None (with its log printed) when it does not start: the run goes on."""
    opponent = postgraphile.start(cli, free_port(), dsn, secret, workdir)
    try:
        opponent.wait_healthy()
    except SystemExit as failure:
        opponent.stop()
        print(f"PostGraphile skipped: it did not start: {failure}")
        return None
    return opponent


def measure_all(
    args: argparse.Namespace, workdir: Path, dsn: str, db_pid: int | None, secret: str, token: str,
    user_id: uuid.UUID, portraits: Server, baseline: Server, signed_baseline: Server, opponent: Server | None,
) -> int:
    expected = min(args.rows, PAGE_SIZE)
    plain = write_body(workdir, "plain", {"query": QUERY})
    signed = write_body(workdir, "signed", {"query": SIGNED_QUERY})
    page = fetch_page(portraits.port, plain.read_bytes(), token)
    check_same_answer(page, fetch_page(baseline.port, plain.read_bytes(), token), expected)
    signed_page = fetch_page(portraits.port, signed.read_bytes(), token)
    check_same_answer(signed_page, fetch_page(signed_baseline.port, signed.read_bytes(), token), expected)
    check_all_signed(signed_page)
    contestants = [Contestant("portraits", portraits, plain), Contestant("baseline", baseline, plain)]
    if opponent is not None:
        opponent_body = workdir / "body-postgraphile.json"
        opponent_body.write_bytes(postgraphile.body(user_id, PAGE_SIZE))
        check_postgraphile(page, fetch_page(opponent.port, opponent_body.read_bytes(), token))
        contestants.append(Contestant("postgraphile", opponent, opponent_body, expect_path=postgraphile.NODES_PATH))
    for contestant in contestants:
        check_refuses_forged_token(contestant, user_id)
    names = ", ".join(c.name for c in contestants)
    print(f"{names}: the same {expected} characters (ids, names, descriptions), and a token signed with another "
          "secret refused; measuring...")

    print(f"\n== plain: {QUERY}")
    plain_tallies = interleave(contestants, token, args, db_pid, workdir)
    print_tallies(plain_tallies, args.duration)
    print_ratios(plain_tallies, args.duration, baseline_target=0.5, opponent_target=1.0)

    print(f"\n== signed: {SIGNED_QUERY}")
    print("   (PostGraphile cannot sign image URLs: measured on the plain query only)")
    signed_contestants = [
        Contestant("portraits-signed", portraits, signed), Contestant("baseline-signed", signed_baseline, signed)
    ]
    signed_tallies = interleave(signed_contestants, token, args, db_pid, workdir)
    print_tallies(signed_tallies, args.duration)
    print_ratios(signed_tallies, args.duration, baseline_target=0.33)

    print("\n== Portraits alone: CPU per request beyond the list")
    character_id = nodes_of(page)[0]["id"]
    by_id = write_body(workdir, "by-id", {"query": BY_ID_QUERY, "variables": {"id": character_id}})
    typename = write_body(workdir, "typename", {"query": TYPENAME_QUERY})
    singles = [
        ("character(id:) by id", Contestant("portraits", portraits, by_id, "data.character.id", -1)),
        ("{ __typename } with token", Contestant("portraits", portraits, typename, "data.__typename", -1)),
    ]
    failed = any(t.errors for t in plain_tallies + signed_tallies)
    for label, contestant in singles:
        figures, _ = measure(contestant, token, args, db_pid, workdir)
        print_single(label, figures)
        failed = failed or figures.errors > 0
    subscriptions.run_async(subscriptions.interruptible(subscription_events(portraits, dsn, secret, workdir, args)))
    if failed:
        print("\nWARNING: some responses were not 200 (see the errors columns)")
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    positive_float, positive_int = positive(float), positive(int)
    parser.add_argument("--duration", type=positive_float, default=8.0, help="measured seconds per window (8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each window (2)")
    parser.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--concurrency", type=positive_int, default=16, help="keep-alive connections (16)")
    parser.add_argument("--rows", type=positive_int, default=1000, help="characters seeded for the user (1000)")
    parser.add_argument("--plans-off", action="store_true", help="run Portraits with EXECUTION_PLANS=off")
    parser.add_argument("--no-postgraphile", action="store_true", help="leave PostGraphile out")
    parser.add_argument("--subscribers", type=positive_int, default=100, help="websocket subscribers (100)")
    parser.add_argument("--events-rounds", type=positive_int, default=5, help="one update per subscriber each (5)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    print(f"CPUs: {cpus} (usable by this process: {usable}); Python {platform.python_version()} "
          f"on {platform.machine()}")
    print(
        f"rows={args.rows} concurrency={args.concurrency} rounds={args.rounds} warmup={args.warmup:g}s "
        f"duration={args.duration:g}s plans={'off' if args.plans_off else 'default'} public URL {PUBLIC_URL}; "
        f"load average {os.getloadavg()[0]:.1f} (other work on the machine lowers every figure)"
    )
    return run_in_workdir("portraits-bench-reads-", lambda workdir: run(args, workdir), timed=True)


if __name__ == "__main__":
    sys.exit(main())
