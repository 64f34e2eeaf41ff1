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


def count_edges(body: bytes) -> int:
    """Edges in a GraphQL-shaped ``characters`` answer; CheckFailed when the shape is wrong."""
    try:
        payload: Any = orjson.loads(body)
        return len(payload["data"]["characters"]["edges"])
    except (orjson.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckFailed(f"not a characters connection ({error!r}): {body[:300]!r}") from None


@dataclass
class Tally:
    """What the workers saw inside the measurement window."""

    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0
    reconnects: int = 0


@dataclass(frozen=True)
class Result:
    requests: int
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
            if start_ns <= began and finished <= end_ns:
                tally.latencies_ns.append(finished - began)
                if status != 200:
                    tally.errors += 1
    finally:
        writer.close()


async def check_first(host: str, port: int, request: bytes, expect_edges: int) -> None:
    """The first response must be a 200 with ``expect_edges`` edges, or the figures mean nothing."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        status, body = await send(reader, writer, request)
    finally:
        writer.close()
    if status != 200:
        raise CheckFailed(f"first response was HTTP {status}: {body[:300]!r}")
    edges = count_edges(body)
    if edges != expect_edges:
        raise CheckFailed(f"first response had {edges} edges, expected {expect_edges}")


async def run(
    host: str, port: int, request: bytes, *, concurrency: int, warmup: float, duration: float, expect_edges: int
) -> Result:
    """Check the first answer, then keep ``concurrency`` connections busy for warm-up + duration seconds."""
    await check_first(host, port, request, expect_edges)
    tally = Tally()
    start_ns = time.perf_counter_ns() + int(warmup * 1e9)
    end_ns = start_ns + int(duration * 1e9)
    await asyncio.gather(*(worker(host, port, request, start_ns, end_ns, tally) for _ in range(concurrency)))
    latencies = sorted(tally.latencies_ns)
    count = len(latencies)
    return Result(
        requests=count,
        errors=tally.errors,
        reconnects=tally.reconnects,
        seconds=duration,
        rps=count / duration,
        p50_ms=percentile(latencies, 0.50) / 1e6,
        p99_ms=percentile(latencies, 0.99) / 1e6,
        mean_ms=(sum(latencies) / count / 1e6) if count else 0.0,
        max_ms=(latencies[-1] / 1e6) if count else 0.0,
    )


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
    parser.add_argument("--expect-edges", type=int, default=100)
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
        result = runner(
            run(
                args.host,
                args.port,
                request,
                concurrency=args.concurrency,
                warmup=args.warmup,
                duration=args.duration,
                expect_edges=args.expect_edges,
            )
        )
    except (CheckFailed, ProtocolError, OSError) as error:
        print(f"loadgen: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    sys.stdout.write(orjson.dumps(asdict(result)).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
