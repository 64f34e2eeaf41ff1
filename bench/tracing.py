"""What does OpenTelemetry tracing cost a request? The list query with tracing off, then on.

Prints figures; it is not a test. It starts a throw-away PostgreSQL (or uses DATABASE_URL), seeds one user
with --rows characters, and runs `portraits serve` twice against it, each driven by bench/loadgen.py as in
bench/list_characters.py (`characters(first: 100)`, --concurrency keep-alive connections):

- off: no OTEL_EXPORTER_OTLP_ENDPOINT (no middleware, no instrumentation);
- on:  OTEL_EXPORTER_OTLP_ENDPOINT at a sink on 127.0.0.1 that accepts every export and counts it, every
       request sampled (the default): a server span and its statements' spans per request, batched and
       exported over OTLP/HTTP by the SDK's thread, as in production.

Then each server answers 300 requests one at a time, and its CPU time per request is read from /proc: a
figure that other load on the machine disturbs far less than throughput.

    python bench/tracing.py [--duration 10] [--concurrency 16] [--rows 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from list_characters import (
    PAGE_SIZE,
    PUBLIC_URL,
    QUERY,
    Figures,
    Server,
    build_parser,
    database,
    fetch_page,
    free_port,
    run_in_workdir,
    run_load,
    seed,
)
from server.auth import issue_token
from storage.migrate import migrate

# Requests sent one after another to measure the server's CPU per request.
SEQUENTIAL = 300


class Sink:
    """An OTLP/HTTP endpoint that answers every export 200 (an empty ExportTraceServiceResponse) and counts them."""

    def __init__(self) -> None:
        self.exports = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sink.bytes += len(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                sink.exports += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def start_serve(name: str, dsn: str, secret: str, workdir: Path, **extra: str) -> Server:
    env = {
        "DATABASE_URL": dsn,
        "JWT_SECRET": secret,
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "warning",
        "PORTRAITS_DATA_DIR": str(workdir / f"{name}-data"),
        "PUBLIC_URL": PUBLIC_URL,
        "WORKERS": "0",  # requests only: no worker polling beside them
        **extra,
    }
    port = free_port()
    env["PORT"] = str(port)
    return Server(name, [sys.executable, "-m", "server.cli", "serve"], env, port, workdir / f"{name}.log")


def cpu_seconds(pid: int) -> float:
    """A process's user plus system CPU time so far (Linux /proc): robust to other load on the machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_request(server: Server, body: bytes, token: str, count: int) -> float:
    """Milliseconds of the server's CPU per request, over ``count`` requests sent one after another."""
    before = cpu_seconds(server.process.pid)
    for _ in range(count):
        fetch_page(server.port, body, token)
    return (cpu_seconds(server.process.pid) - before) * 1000 / count


def measure(workdir: Path, args: argparse.Namespace) -> int:
    sink = Sink()
    user_id = uuid.uuid4()
    with database(workdir) as (dsn, description):
        asyncio.run(migrate(dsn))
        asyncio.run(seed(dsn, user_id, args.rows))
        print(f"database: {description}; {args.rows} characters for one user")
        secret = secrets.token_urlsafe(30)
        token = issue_token(secret, user_id, ttl=timedelta(hours=1))
        body = orjson.dumps({"query": QUERY})
        body_file = workdir / "body.json"
        body_file.write_bytes(body)
        expected = min(args.rows, PAGE_SIZE)
        results: list[Figures] = []
        cpu: list[float] = []
        for name, extra in (("off", {}), ("on", {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url})):
            server = start_serve(name, dsn, secret, workdir, **extra)
            try:
                server.wait_healthy()
                fetch_page(server.port, body, token)
                results.append(run_load(server, body_file, token, args, expected))
                cpu.append(cpu_per_request(server, body, token, SEQUENTIAL))
            finally:
                server.stop()  # SIGTERM: the traced one flushes what it still holds
        off, on = results
        print(
            f"\n{'tracing':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'requests':>9} {'errors':>7} "
            f"{'CPU ms/req':>11}"
        )
        for r, cpu_ms in zip(results, cpu, strict=True):
            print(
                f"{r.name:<8} {r.rps:>9.1f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.mean_ms:>8.2f} {r.requests:>9} "
                f"{r.errors:>7} {cpu_ms:>11.2f}"
            )
        print(
            f"\ntracing on: {on.rps / off.rps:.0%} of the throughput off, "
            f"{(cpu[1] - cpu[0]) * 1000:+.0f} us of server CPU per request ({SEQUENTIAL} sent one at a time); "
            f"{sink.exports} OTLP exports, {sink.bytes / 1024:.0f} KB in all"
        )
        return 1 if any(r.errors for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.set_defaults(rows=100)
    args = parser.parse_args(argv)
    print(f"rows={args.rows} concurrency={args.concurrency} warmup={args.warmup:g}s duration={args.duration:g}s")
    return run_in_workdir("portraits-bench-tracing-", lambda workdir: measure(workdir, args))


if __name__ == "__main__":
    sys.exit(main())
