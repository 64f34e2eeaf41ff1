"""A deliberately cheap HTTP/1.1 load generator, run as its own process.

On a 2-core machine the client competes with the server for CPU, so it must
cost as little as possible per request: raw asyncio streams (on uvloop when
installed), one pre-built request repeated over keep-alive connections, and a
response parser that reads only the status line and Content-Length. httpx
would spend more CPU than the server under test.

Run as ``python bench/loadgen.py --port P --path /graphql --body-file F
--header 'Authorization: Bearer ...'``; it prints one JSON object with the
figures on stdout and exits non-zero (message on stderr) when the first
response is not a 200 with the expected number of edges.

--expect-path names where the first answer's list is (``data.characters.edges``
by default; another server's shape, or with --expect-edges -1 any non-null
value such as ``data.__typename``). --cpu-pid (and --db-pid) read a process
tree's CPU time from /proc when the measurement window opens and closes, so the
CPU per request counts no warm-up; ``completed`` is the responses that arrived
inside the window, the requests that CPU served. --latencies-out writes the
window's latencies (ns) so runs can be merged into one percentile.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from proc_cpu import tree_cpu_seconds


class ProtocolError(Exception):
    """The server answered something this minimal client does not understand."""


class CheckFailed(Exception):
    """The first response was not what a working server returns."""


def build_request(host: str, port: int, path: str, body: bytes, headers: list[str]) -> bytes:
    """The whole request as bytes, built once and written as is for every request."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Accept: application/json",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    """One request/response round trip on a keep-alive connection: (status, body)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        raise ProtocolError(f"unexpected status line: {head[:40]!r}")
    status = int(head[9:12])
    length = -1
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
            break
    if length < 0:
        raise ProtocolError("response has no Content-Length (chunked responses are not supported)")
    return status, await reader.readexactly(length)


DEFAULT_PATH = "data.characters.edges"


def find(body: bytes, path: str = DEFAULT_PATH) -> Any:
    """The value at a dotted ``path`` of a JSON answer; CheckFailed when the shape is wrong."""
    try:
        value: Any = orjson.loads(body)
        for key in path.split("."):
            value = value[key]
    except (orjson.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckFailed(f"no {path} in the answer ({error!r}): {body[:300]!r}") from None
    return value


def count_edges(body: bytes, path: str = DEFAULT_PATH) -> int:
    """Items of the list at ``path`` (edges of a ``characters`` answer by default); CheckFailed if not a list."""
    items = find(body, path)
    if not isinstance(items, list):
        raise CheckFailed(f"{path} is not a list: {body[:300]!r}")
    return len(items)


@dataclass
class Tally:
    """What the workers saw inside the measurement window."""

    latencies_ns: list[int] = field(default_factory=list)
    completed: int = 0  # responses that arrived inside the window, whenever they were sent
    errors: int = 0
    reconnects: int = 0


@dataclass(frozen=True)
class Result:
    requests: int
    completed: int
    server_cpu_s: float  # the --cpu-pid trees' CPU inside the window (0 without)
    db_cpu_s: float  # the --db-pid tree's
    errors: int
    reconnects: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return float(sorted_values[rank - 1])


async def worker(host: str, port: int, request: bytes, start_ns: int, end_ns: int, tally: Tally) -> None:
    """Send requests back to back until the window closes; record only those finished inside it."""
    clock = time.perf_counter_ns
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            began = clock()
            if began >= end_ns:
                return
            try:
                status, _ = await send(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError):
                finished = clock()
                if start_ns <= finished <= end_ns:
                    tally.errors += 1
                    tally.reconnects += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            finished = clock()
            if start_ns <= finished <= end_ns:
                tally.completed += 1
            if start_ns <= began and finished <= end_ns:
                tally.latencies_ns.append(finished - began)
                if status != 200:
                    tally.errors += 1
    finally:
        writer.close()


async def check_first(host: str, port: int, request: bytes, expect_edges: int, path: str = DEFAULT_PATH) -> None:
    """The first response must be a 200 with ``expect_edges`` items at ``path`` (-1: any non-null value there),
    or the figures mean nothing."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        status, body = await send(reader, writer, request)
    finally:
        writer.close()
    if status != 200:
        raise CheckFailed(f"first response was HTTP {status}: {body[:300]!r}")
    if expect_edges < 0:
        if find(body, path) is None:
            raise CheckFailed(f"first response has null at {path}: {body[:300]!r}")
        return
    edges = count_edges(body, path)
    if edges != expect_edges:
        raise CheckFailed(f"first response had {edges} edges, expected {expect_edges}")


async def cpu_in_window(pids: Sequence[int], start_ns: int, end_ns: int) -> list[float]:
    """Each process tree's CPU seconds between ``start_ns`` and ``end_ns`` (perf_counter_ns)."""
    await asyncio.sleep(max(0, start_ns - time.perf_counter_ns()) / 1e9)
    before = [tree_cpu_seconds(pid) for pid in pids]
    await asyncio.sleep(max(0, end_ns - time.perf_counter_ns()) / 1e9)
    return [tree_cpu_seconds(pid) - used for pid, used in zip(pids, before, strict=True)]


async def run(
    host: str,
    port: int,
    request: bytes,
    *,
    concurrency: int,
    warmup: float,
    duration: float,
    expect_edges: int,
    expect_path: str = DEFAULT_PATH,
    cpu_pids: Sequence[int] = (),
    db_pid: int | None = None,
) -> tuple[Result, list[int]]:
    """Check the first answer, then keep ``concurrency`` connections busy for warm-up + duration seconds.

    Returns the figures and the window's sorted latencies (ns).
    """
    await check_first(host, port, request, expect_edges, expect_path)
    tally = Tally()
    start_ns = time.perf_counter_ns() + int(warmup * 1e9)
    end_ns = start_ns + int(duration * 1e9)
    metered = [*cpu_pids, *([] if db_pid is None else [db_pid])]
    meter = asyncio.create_task(cpu_in_window(metered, start_ns, end_ns))
    await asyncio.gather(*(worker(host, port, request, start_ns, end_ns, tally) for _ in range(concurrency)))
    cpu = await meter
    server_cpu = sum(cpu[: len(cpu_pids)])
    db_cpu = cpu[-1] if db_pid is not None else 0.0
    latencies = sorted(tally.latencies_ns)
    count = len(latencies)
    result = Result(
        requests=count,
        completed=tally.completed,
        server_cpu_s=server_cpu,
        db_cpu_s=db_cpu,
        errors=tally.errors,
        reconnects=tally.reconnects,
        seconds=duration,
        rps=count / duration,
        p50_ms=percentile(latencies, 0.50) / 1e6,
        p99_ms=percentile(latencies, 0.99) / 1e6,
        mean_ms=(sum(latencies) / count / 1e6) if count else 0.0,
        max_ms=(latencies[-1] / 1e6) if count else 0.0,
    )
    return result, latencies


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Minimal keep-alive HTTP/1.1 POST load generator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/graphql")
    parser.add_argument("--body-file", required=True, help="file holding the request body")
    parser.add_argument("--header", action="append", default=[], help="extra 'Name: value' header (repeatable)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--expect-edges", type=int, default=100, help="items at --expect-path (-1: any non-null)")
    parser.add_argument("--expect-path", default=DEFAULT_PATH, help=f"the checked value's dotted path ({DEFAULT_PATH})")
    parser.add_argument("--cpu-pid", type=int, action="append", default=[], help="server process (tree) to meter")
    parser.add_argument("--db-pid", type=int, help="database process (tree) to meter")
    parser.add_argument("--latencies-out", help="file to write the window's latencies to (JSON list of ns)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with open(args.body_file, "rb") as handle:
        body = handle.read()
    request = build_request(args.host, args.port, args.path, body, args.header)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        result, latencies = runner(
            run(
                args.host,
                args.port,
                request,
                concurrency=args.concurrency,
                warmup=args.warmup,
                duration=args.duration,
                expect_edges=args.expect_edges,
                expect_path=args.expect_path,
                cpu_pids=args.cpu_pid,
                db_pid=args.db_pid,
            )
        )
    except (CheckFailed, ProtocolError, OSError) as error:
        print(f"loadgen: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if args.latencies_out:
        with open(args.latencies_out, "wb") as handle:
            handle.write(orjson.dumps(latencies))
    sys.stdout.write(orjson.dumps(asdict(result)).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
