"""Does one server process give memory back after thousands of subscription sockets come and go?

Prints figures; it is not a test. It starts a throw-away PostgreSQL (or uses
DATABASE_URL), seeds one character for each of --sockets users, starts ONE
server process (``python -m server.cli serve`` with WORKERS=0, as
bench/subscriptions.py does) and then runs --cycles cycles of: a separate
load process opens --sockets websockets (graphql-transport-ws, one per user,
each subscribed to ``characterImageUpdated(characterId:)``), every
subscription is proven live by an update it hears, one more update round at
--rate gives the latency from commit to client receipt (p50/p99/max: what the
garbage collector's pauses cost), then every socket is closed and the load
process exits.

Per cycle it prints the server's RSS with the sockets open and after they
closed. The target (issue 12, point 5): from the second cycle on, RSS after
closing stays within 10 % of its level after the first cycle, so nothing a
closed socket held (reference cycles included) is kept.

    python bench/socket_cycles.py [--sockets 3000] [--cycles 6] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import orjson

from list_characters import Server, run_in_workdir
from subscriptions import (
    UPDATERS,
    Bench,
    LoadProcess,
    Population,
    RoundFigures,
    Target,
    mb,
    raise_fd_limit,
    rss_bytes,
    run_with_server,
    wait_quiet,
    warm_up,
)

TARGET_DRIFT = 0.10  # RSS after closing, cycles 2..N, against cycle 1
SETTLE_CLOSED = 3.0  # seconds after the load process exits before reading RSS (the server finishes its clean-up)


@dataclass(frozen=True, slots=True)
class Cycle:
    number: int
    population: Population
    round: RoundFigures
    rss_closed: int


async def one_cycle(number: int, server: Server, pool: asyncpg.Pool, jobs_file: Path, targets: Sequence[Target],
                    workdir: Path, args: argparse.Namespace, baseline: int) -> Cycle:
    """Open every socket, prove each live, one timed round, close them all; the server's RSS at each stage."""
    load = await LoadProcess.start(server.port, jobs_file, args.compression, workdir / f"load-{number}.log")
    try:
        bench = Bench(args=args, server=server, pool=pool, load=load, baseline_rss=baseline)
        population = await bench.add_subscribers(targets)
        figures = await bench.measure_round(args.rates[0])
    finally:
        await load.stop()  # closes every socket politely, then exits
    bench.check_server()
    await wait_quiet(server.process.pid)
    await asyncio.sleep(SETTLE_CLOSED)
    return Cycle(number, population, figures, rss_bytes(server.process.pid))


HEADER = (f"{'cycle':>5} {'live':>6} {'conn/s':>7} {'RSS open':>9} {'RSS round':>9} {'RSS closed':>10} "
          f"{'vs cycle 1':>10} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'server CPU':>10} {'machine CPU':>11}")


def print_cycle(cycle: Cycle, first_closed: int) -> None:
    drift = cycle.rss_closed / first_closed - 1
    print(f"{cycle.number:>5} {cycle.population.subscribers:>6} {cycle.population.connect_rate:>7.0f} "
          f"{mb(cycle.population.rss_idle):>9} {mb(cycle.round.rss_after):>9} {mb(cycle.rss_closed):>10} "
          f"{drift:>+10.1%} {cycle.round.p50_ms:>7.1f} {cycle.round.p99_ms:>7.1f} {cycle.round.max_ms:>7.1f} "
          f"{cycle.round.server_cpu:>10.0%} {cycle.round.machine_cpu:>11.0%}")


async def drive(server: Server, dsn: str, warm: Sequence[Target], targets: Sequence[Target], workdir: Path,
                args: argparse.Namespace) -> int:
    gc.disable()  # a collection here would delay commit times and pass for server latency
    pool = await asyncpg.create_pool(dsn, min_size=UPDATERS, max_size=UPDATERS)
    try:
        await warm_up(server.port, pool, warm, workdir / "warm.json", args, workdir / "warm-load.log")
        await wait_quiet(server.process.pid)
        await asyncio.sleep(1)
        baseline = rss_bytes(server.process.pid)
        print(f"server RSS after warm-up, no sockets: {mb(baseline)}")
        jobs_file = workdir / "jobs.json"
        jobs_file.write_bytes(orjson.dumps([(t.character_id, t.token) for t in targets]))
        cycles: list[Cycle] = []
        print(HEADER)
        for number in range(1, args.cycles + 1):
            cycle = await one_cycle(number, server, pool, jobs_file, targets, workdir, args, baseline)
            cycles.append(cycle)
            print_cycle(cycle, cycles[0].rss_closed)
    finally:
        await pool.close()
    first = cycles[0].rss_closed
    worst = max(abs(c.rss_closed / first - 1) for c in cycles[1:]) if len(cycles) > 1 else 0.0
    growth = (cycles[-1].rss_closed - first) / max(len(cycles) - 1, 1)
    print()
    print(f"RSS after closing: {mb(baseline)} before the first cycle, {mb(first)} after it, "
          f"{mb(cycles[-1].rss_closed)} after cycle {cycles[-1].number} ({mb(growth)} per cycle after the first)")
    ok = worst <= TARGET_DRIFT
    print(f"largest drift from cycle 1: {worst:.1%}   target <= {TARGET_DRIFT:.0%}: {'ok' if ok else 'MISSED'}")
    p99s = [c.round.p99_ms for c in cycles]
    print(f"p99 over the cycles' rounds at {args.rates[0]:.0f} updates/s: {min(p99s):.1f}-{max(p99s):.1f} ms; "
          f"max {max(c.round.max_ms for c in cycles):.1f} ms")
    missing = sum(c.round.missing + c.population.failed + c.population.not_live for c in cycles)
    if missing:
        print(f"WARNING: {missing} failed connections, unheard subscriptions or missed updates over the run")
    return 0 if ok and not missing else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sockets", type=int, default=3000, help="websockets opened per cycle (3000)")
    parser.add_argument("--cycles", type=int, default=6, help="open/subscribe/close cycles (6)")
    parser.add_argument("--rate", dest="rates", type=lambda raw: [float(raw)], default=[1000.0],
                        help="updates/s of each cycle's timed round (1000)")
    parser.add_argument("--connect-concurrency", type=int, default=200, help="handshakes at a time (200)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds before an unheard update counts as missing (10)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to wait after subscribing (2)")
    parser.add_argument("--idle", type=float, default=2.0, help="seconds of idle CPU measurement per cycle (2)")
    parser.add_argument("--compression", choices=("deflate", "none"), default="deflate",
                        help="offer permessage-deflate as browsers do (deflate), or not (none)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.sockets <= 0 or args.cycles < 2:
        raise SystemExit("--sockets must be positive and --cycles at least 2")
    print(f"CPUs: {os.cpu_count()}; Python {platform.python_version()}; RLIMIT_NOFILE {raise_fd_limit()}")
    print(f"{args.cycles} cycles of {args.sockets} sockets opened, subscribed, one round at {args.rates[0]:g} "
          "updates/s, closed")
    return run_in_workdir(
        "portraits-bench-cycles-",
        lambda workdir: run_with_server(args, workdir, count=args.sockets, drive=drive),
        timed=True,
    )


if __name__ == "__main__":
    sys.exit(main())
