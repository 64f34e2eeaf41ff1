"""What abuse costs one server process: the worst documents the limits let through, the cheapest they refuse,
a body at the cap, and 1,000 idle connections.

Prints figures; it is not a test. It starts a throw-away PostgreSQL (or uses
DATABASE_URL) and ONE ``portraits serve`` (WORKERS=0, as
bench/subscriptions.py does), then:

1. documents: each shape is sent --requests times over one keep-alive
   connection, every copy made unique by a trailing comment so no cache
   helps; the server's CPU per request (from /proc, 10 ms ticks: use enough
   requests) is printed beside a ``{ __typename }`` baseline, with what the
   server answered. Anonymous documents are also run in this process through
   ``schema.execute`` alone (CPU per run, no HTTP), to separate GraphQL's
   share. Signed-in ones run as a user with --rows characters. The shapes:
   the largest documents each limit lets through, the same one step further
   (refused), and the doubling-fragments attack of issue 13.
2. bodies: one body of exactly MAX_REQUEST_BODY_BYTES (answered), one byte
   more (413 from its Content-Length), and 200 MB streamed without a length
   (413 as soon as the cap is passed: how much was sent, how long it took),
   with the server's RSS before and after.
3. idle connections: --idle connections that send nothing: the server's RSS
   per connection, /healthz while they are open, and how long until the
   header deadline closes them all.

Targets (issue 13): the worst accepted document under 50 ms of server CPU,
a refusal under 1 ms.

    python bench/abuse.py [--requests 100] [--idle 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import platform
import secrets
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import orjson
from graphql import get_introspection_query

from graph.schema import schema
from list_characters import Server, database, free_port, run_in_workdir, seed, unseed
from server.auth import issue_token
from server.settings import ConnectionLimits, HttpLimits
from storage.migrate import migrate
from subscriptions import cpu_seconds, mb, raise_fd_limit, rss_bytes, start_server

CPU_TARGET_MS = 50.0
REFUSAL_TARGET_MS = 1.0
STREAMED_BYTES = 200 * 1024 * 1024
CHUNK = 64 * 1024


def doubling(levels: int) -> str:
    """Fragments that each spread the next twice: 2**levels fields if walked spread by spread."""
    chain = "".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }} " for i in range(levels))
    return "query { ...F0 } " + chain + f"fragment F{levels} on Query {{ __typename }}"


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    document: str
    target_ms: float | None  # the issue's target for this shape, when it has one
    signed_in: bool = False  # sent with the seeded user's token (their --rows characters)


CHARACTER_FIELDS = (
    "id name description appearanceTags traits persona gender contentRating sceneBehaviorRules imageUrl "
    "referenceImageUrl seedLocked createdAt updatedAt signedImageUrl { url expiresAt }"
)


def aliased_pages(aliases: int) -> str:
    """``aliases`` pages of 100 characters with every field: within the limits, 100 rows x 16 fields each."""
    page = f"characters(first: 100) {{ edges {{ cursor node {{ {CHARACTER_FIELDS} }} }} }}"
    return "{ " + " ".join(f"p{i}: {page}" for i in range(aliases)) + " }"


def aliased_pages_by_fragment(aliases: int) -> str:
    """The same pages, their fields written once in a fragment: under the limit on fields written."""
    page = "characters(first: 100) { edges { cursor node { ...Everything } } }"
    return ("{ " + " ".join(f"p{i}: {page}" for i in range(aliases)) + " } "
            f"fragment Everything on Character {{ {CHARACTER_FIELDS} }}")


def aliased_introspection(copies: int) -> str:
    """``copies`` aliased copies of GraphiQL's introspection query (220 fields expanded each)."""
    query = get_introspection_query(descriptions=True)
    schema_part = query[query.index("__schema"):query.index("fragment FullType")].strip()
    schema_part = schema_part[:schema_part.rindex("}")].strip()
    fragments = query[query.index("fragment FullType"):]
    return "query { " + " ".join(f"s{i}: {schema_part}" for i in range(copies)) + " }\n" + fragments


def connection_fragment_pages(pages: int, first: int) -> str:
    """``pages`` aliased pages whose edges are in a fragment on the connection, as Relay and Apollo write them."""
    page = f"characters(first: {first}) {{ ...Page }}"
    return ("{ " + " ".join(f"p{i}: {page}" for i in range(pages)) + " } "
            f"fragment Page on CharacterConnection {{ edges {{ cursor node {{ {CHARACTER_FIELDS} }} }} }}")


DEEP_FIELD = (
    "name args { name type { name ofType { name } } } "
    "type { name ofType { name ofType { fields { name args { name } type { name } } } } }"
)
SHALLOW_FIELD = "name args { name type { name ofType { name } } } type { name ofType { name ofType { name } } }"


def introspection_walk(aliases: int, field: str) -> str:
    """Every type's fields, ``aliases`` times, each field as ``field`` selects it: 1.5 KB at 29 deep aliases."""
    selections = " ".join(f"f{i}: fields {{ ...F }}" for i in range(aliases))
    return f"{{ __schema {{ types {{ name {selections} }} }} }} fragment F on __Field {{ {field} }}"


# sceneBehaviorRules as large as they may be (16 KiB encoded), of as many values as fit: ~7,000.
LARGEST_RULES = {f"k{i}": [0] * 900 for i in range(8)}


async def give_largest_rules(dsn: str, user: uuid.UUID) -> None:
    """Every seeded character gets the largest rules the input checks let through (what an attacker would store)."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "UPDATE characters SET scene_behavior_rules = $2::jsonb WHERE user_id = $1", user,
            orjson.dumps(LARGEST_RULES).decode(),
        )
    finally:
        await connection.close()


def same_name(copies: int, length: int, field: str = "deleteCharacter(id: \"{}\")") -> str:
    """``copies`` of one field with the same ``length``-character argument: validation compares every pair, printing
    both arguments, finds no conflict (which would stop it at 100 errors), and execution runs it once."""
    fields = " ".join([field.replace("{}", "x" * length)] * copies)
    operation = "mutation" if field.startswith("delete") else "query"
    return f"{operation} {{ {fields} }}"


SHAPES = [
    Shape("baseline: { __typename }", "{ __typename }", None),
    Shape("20 x __type(name:) { name } (the most same-named fields accepted)",
          "{ " + '__type(name: "Query") { name } ' * 20 + "}", CPU_TARGET_MS),
    Shape("100 x __type(name:) { name }", "{ " + '__type(name: "Query") { name } ' * 100 + "}", None),
    Shape("20 x deleteCharacter(id: the same 4,900 characters)",
          same_name(20, 4_900), CPU_TARGET_MS, signed_in=True),
    Shape("20 x __type(name: the same 4,900 characters) { name }",
          same_name(20, 4_900, '__type(name: "{}") { name }'), CPU_TARGET_MS),
    Shape("199 x deleteCharacter(id: the same 470 characters)", same_name(199, 470), None, signed_in=True),
    Shape("100 x __type(name: the same 900 characters) { name }",
          same_name(100, 900, '__type(name: "{}") { name }'), None),
    Shape("199 x __type(name: the same 470 characters) { name }", same_name(199, 470, '__type(name: "{}") { name }'),
          None),
    Shape(
        "through the limits, refused by validation: 150 fragments on unknown types",
        "{ __typename } " + " ".join(f"fragment F{i} on Qurey{i} {{ __typename }}" for i in range(150)),
        CPU_TARGET_MS,
    ),
    Shape("GraphiQL's introspection query", get_introspection_query(descriptions=True), CPU_TARGET_MS),
    Shape("GraphiQL's introspection query, every option", get_introspection_query(True, True, True, True, True),
          CPU_TARGET_MS),
    Shape("2 aliased introspection queries", aliased_introspection(2), None),
    Shape("every type's fields, 7 aliases, a shallower __Field fragment (the most accepted)",
          introspection_walk(7, SHALLOW_FIELD), CPU_TARGET_MS),
    Shape("every type's fields, 29 aliases, a deep __Field fragment (0.8 KB)",
          introspection_walk(29, DEEP_FIELD), None),
    Shape("one page of 100 characters, every field", aliased_pages(1), CPU_TARGET_MS, signed_in=True),
    Shape("2 aliased pages, every field (largest rules)", aliased_pages_by_fragment(2), None, signed_in=True),
    Shape("2 aliased pages, every field but the rules (the most accepted)",
          aliased_pages_by_fragment(2).replace(" sceneBehaviorRules", ""), CPU_TARGET_MS, signed_in=True),
    Shape("2 pages of 100, edges in a connection fragment (largest rules)",
          connection_fragment_pages(2, 100), None, signed_in=True),
    Shape("3 pages of 5, edges in a connection fragment", connection_fragment_pages(3, 5), CPU_TARGET_MS,
          signed_in=True),
    Shape("3 pages of 100, edges in a connection fragment", connection_fragment_pages(3, 100), None, signed_in=True),
    Shape("30 aliased pages of 100 characters, every field", aliased_pages(30), None, signed_in=True),
    Shape("the same, fields in one fragment", aliased_pages_by_fragment(30), None, signed_in=True),
    Shape("cheapest refusal: 11 levels deep", "{" + "a{" * 11 + "b" + "}" * 11 + "}", REFUSAL_TARGET_MS),
    Shape("doubling fragments, 10 levels (1 KB)", doubling(10), None),
    Shape("doubling fragments, 40 levels (the attack)", doubling(40), None),
    Shape("doubling fragments, 190 levels (8 KB)", doubling(190), None),
]


def unique(document: str, n: int) -> str:
    return f"{document}\n# {n} {secrets.token_hex(4)}"


def answer_summary(body: bytes) -> str:
    answer = orjson.loads(body)
    errors = answer.get("errors") or []
    if not errors:
        return "data"
    extensions = errors[0].get("extensions", {})
    detail = ""
    if "measure" in extensions:
        detail = f" {extensions['measure']} {extensions['value']} > {extensions['limit']}"
    return f"{len(errors)} error(s): {extensions.get('code')}{detail}"


def server_ms_per_request(server: Server, shape: Shape, requests: int, token: str) -> tuple[float, str]:
    """The server's CPU per request for ``requests`` unique copies of the shape, and its last answer."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if shape.signed_in:
        headers["Authorization"] = f"Bearer {token}"
    try:
        before = cpu_seconds(server.process.pid)
        body = b""
        for n in range(requests):
            connection.request("POST", "/graphql", orjson.dumps({"query": unique(shape.document, n)}), headers)
            response = connection.getresponse()
            body = response.read()
        spent = cpu_seconds(server.process.pid) - before
    finally:
        connection.close()
    return spent * 1000 / requests, answer_summary(body)


def in_process_ms(document: str, runs: int) -> float:
    """Median CPU of ``schema.execute`` alone, fresh caches (unique text) each run."""
    times = []
    for n in range(runs):
        text = unique(document, n)
        started = time.process_time()
        asyncio.run(schema.execute(text))
        times.append((time.process_time() - started) * 1000)
    return statistics.median(times)


def bench_documents(server: Server, requests: int, token: str) -> None:
    print(f"\n-- documents: {requests} unique copies each over one keep-alive connection; server CPU per request "
          f"(target: what the limits accept under {CPU_TARGET_MS:g} ms, the cheapest refusal under "
          f"{REFUSAL_TARGET_MS:g} ms); execute: schema.execute alone, anonymous")
    print(f"{'shape':<75} {'bytes':>6} {'server ms':>9} {'execute ms':>10}  answer")
    for shape in SHAPES:
        per_request, answer = server_ms_per_request(server, shape, requests, token)
        alone = "" if shape.signed_in else f"{in_process_ms(shape.document, min(requests, 30)):.2f}"
        mark = ""
        if shape.target_ms is not None:
            mark = "  ok" if per_request < shape.target_ms else f"  OVER {shape.target_ms:g} ms"
        print(f"{shape.name:<75} {len(shape.document):>6} {per_request:>9.2f} {alone:>10}  {answer}{mark}")


def post_raw(port: int, head: bytes, body_chunks: Callable[[socket.socket], int]) -> tuple[bytes, int, float]:
    """Send a request by hand; (the status line, bytes of body sent, seconds until the answer)."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)
        sent = body_chunks(sock)
        answer = sock.recv(4096)
    return answer.split(b"\r\n", 1)[0], sent, time.perf_counter() - started


def bench_bodies(server: Server, cap: int) -> None:
    print(f"\n-- bodies (MAX_REQUEST_BODY_BYTES={cap})")
    prefix, suffix = b'{"query":"{ __typename }","variables":{"pad":"', b'"}}'
    at_cap = prefix + b"x" * (cap - len(prefix) - len(suffix)) + suffix
    for name, body in (("at the cap", at_cap), ("one byte over", at_cap[:-3] + b'x"}}')):
        head = (f"POST /graphql HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        cpu = cpu_seconds(server.process.pid)

        def send_all(sock: socket.socket, body: bytes = body) -> int:
            try:
                sock.sendall(body)
            except OSError:  # refused before the end: the server closed its side
                return 0
            return len(body)

        status, _, seconds = post_raw(server.port, head, send_all)
        spent = (cpu_seconds(server.process.pid) - cpu) * 1000
        print(f"{name:<28} {len(body):>10} bytes: {status.decode()!r} in {seconds * 1000:.1f} ms, "
              f"server CPU {spent:.0f} ms")

    rss = rss_bytes(server.process.pid)
    head = (b"POST /graphql HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")

    def stream(sock: socket.socket) -> int:
        sent = 0
        chunk = b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n"
        try:
            while sent < STREAMED_BYTES:
                sock.sendall(chunk)
                sent += CHUNK
        except OSError:  # the server answered and closed: stop sending
            pass
        return sent

    status, sent, seconds = post_raw(server.port, head, stream)
    print(f"{'200 MB streamed, no length':<28}: {status.decode()!r} after {mb(sent)} sent, {seconds * 1000:.0f} ms; "
          f"server RSS {mb(rss)} -> {mb(rss_bytes(server.process.pid))}")


async def healthz_ms(port: int) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    if not answer.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"/healthz answered {answer[:100]!r}")
    return (time.perf_counter() - started) * 1000


async def bench_idle(server: Server, count: int, header_timeout: float) -> None:
    print(f"\n-- {count} idle connections (HEADER_TIMEOUT_SECONDS={header_timeout:g})")
    rss = rss_bytes(server.process.pid)
    opened = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", server.port) for _ in range(count)))
    started = time.perf_counter()
    await asyncio.sleep(0.5)
    grown = rss_bytes(server.process.pid) - rss
    health = [await healthz_ms(server.port) for _ in range(10)]
    print(f"server RSS {mb(rss)} -> {mb(rss + grown)} ({grown / count / 1024:.1f} KB a connection); "
          f"/healthz meanwhile: median {statistics.median(health):.1f} ms, max {max(health):.1f} ms")

    async def closed_after(reader: asyncio.StreamReader) -> float:
        await reader.read()  # b"" when the server closes (or a reset)
        return time.perf_counter() - started

    results = await asyncio.gather(*(closed_after(reader) for reader, _ in opened), return_exceptions=True)
    times = [result for result in results if isinstance(result, float)]
    resets = len(results) - len(times)
    for _, writer in opened:
        writer.close()
    print(f"all {count} closed by the server: first after {min(times, default=0):.1f} s, "
          f"last after {max(times, default=0):.1f} s ({resets} as resets)")


def run_bench(args: argparse.Namespace, workdir: Path) -> int:
    raise_fd_limit()
    with database(workdir) as (dsn, description):
        asyncio.run(migrate(dsn))
        print(f"database: {description}")
        user = uuid.uuid4()
        asyncio.run(seed(dsn, user, args.rows))
        asyncio.run(give_largest_rules(dsn, user))
        secret = secrets.token_urlsafe(30)
        server = start_server(free_port(), dsn, secret, workdir, sockets=0)  # default limits
        try:
            server.wait_healthy()
            bench_documents(server, args.requests, issue_token(secret, user, ttl=timedelta(hours=1)))
            bench_bodies(server, HttpLimits().max_body_bytes)
            asyncio.run(bench_idle(server, args.idle, ConnectionLimits().header_timeout))
        finally:
            server.stop()
            if os.environ.get("DATABASE_URL"):
                asyncio.run(unseed(dsn, user))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=100, help="unique copies of each document (default 100)")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections to open (default 1000)")
    parser.add_argument("--rows", type=int, default=100, help="characters of the signed-in user (default 100)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"CPUs: {os.cpu_count()}; Python {platform.python_version()} on {platform.machine()}")
    return run_in_workdir("portraits-abuse-", lambda workdir: run_bench(args, workdir), timed=True)


if __name__ == "__main__":
    sys.exit(main())
