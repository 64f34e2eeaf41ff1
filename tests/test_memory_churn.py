"""Memory holds under churn: a server gives back what sockets and connections that came and went held.

One real ``portraits serve``; cycles of websockets opened, subscribed and
closed, then many short HTTP connections. The full-scale figure (6 cycles of
3,000 sockets) is bench/socket_cycles.py's; this is the same check small
enough for every run: RSS after each cycle's sockets have closed stays within
10 % of its level after the first cycle (issue 14, point 3), and what it does
grow by is far below what a leak of each socket's state would cost (about
10 KB each before the GC pacer and the cut socket channels).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import token_for
from tests.realtime_support import TRANSPORT_WS, GraphQLSocket
from tests.server_process import READY, Server
from tests.support import TEST_JWT_SECRET, rss_bytes

SOCKETS_PER_CYCLE = 800
CYCLES = 5
OPEN_AT_ONCE = 100
HTTP_CONNECTIONS = 1_500
DRIFT_BOUND = 0.10  # RSS after closing, cycles 2..N, against cycle 1 (issue 14)
LEAK_PER_SOCKET = 4 * 1024  # bytes; what a socket may seem to leave behind on average, noise included
SUBSCRIPTION = "subscription { characterImageUpdated { id imageUrl } }"


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    process = Server(
        tmp_path, DATABASE_URL=database_url, JWT_SECRET=TEST_JWT_SECRET, WORKERS="0",
        MAX_WEBSOCKETS_PER_ADDRESS="10000", MAX_WEBSOCKETS_PER_USER="10000", LOG_LEVEL="warning",
    )
    try:
        process.wait_for(READY)
        yield process
    finally:
        process.stop()


def cpu_seconds(server: Server) -> float:
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


async def settled_rss(server: Server) -> int:
    """RSS once the server has gone quiet (its clean-up after the last close done)."""
    before = cpu_seconds(server)
    while True:
        await asyncio.sleep(1.0)
        now = cpu_seconds(server)
        if now - before < 0.05:
            return rss_bytes(server.process.pid)
        before = now


async def one_socket(url: str, opened: asyncio.Event, everyone_open: asyncio.Event, gate: asyncio.Semaphore) -> None:
    """A user's socket: init, subscribe, ping (its pong proves the subscribe was read), hold, close politely."""
    token = token_for(uuid.uuid4())
    async with contextlib.AsyncExitStack() as stack:
        async with gate:
            socket = await stack.enter_async_context(GraphQLSocket.open(url, protocol=TRANSPORT_WS, token=token))
        await socket.subscribe(SUBSCRIPTION)
        await socket.send({"type": "ping"})
        assert (await socket.receive())["type"] == "pong"
        opened.set()
        await everyone_open.wait()


async def socket_cycle(server: Server) -> None:
    url = server.url.replace("http://", "ws://") + "/graphql"
    gate = asyncio.Semaphore(OPEN_AT_ONCE)
    everyone_open = asyncio.Event()
    events = [asyncio.Event() for _ in range(SOCKETS_PER_CYCLE)]
    tasks = [asyncio.create_task(one_socket(url, event, everyone_open, gate)) for event in events]
    try:
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in events)), timeout=120)
    finally:
        everyone_open.set()
        await asyncio.gather(*tasks)


async def http_churn(server: Server) -> None:
    """Short connections, each with one request, as a client without keep-alive makes them."""
    gate = asyncio.Semaphore(OPEN_AT_ONCE)
    body = b'{"query": "{ __typename }"}'
    request = (
        f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body

    async def one() -> None:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                writer.write(request)
                answer = await asyncio.wait_for(reader.read(), timeout=30)  # to the server's close
            finally:
                writer.close()
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"data":{"__typename":"Query"}}'), answer

    await asyncio.gather(*(one() for _ in range(HTTP_CONNECTIONS)))


async def test_rss_returns_to_its_first_cycle_level_after_socket_and_connection_churn(server: Server) -> None:
    # given: a served process warmed up by one cycle of each kind
    await socket_cycle(server)
    await http_churn(server)
    first = await settled_rss(server)

    # when: more cycles of sockets and of short HTTP connections come and go
    after: list[int] = []
    started = time.monotonic()
    for _ in range(CYCLES - 1):
        await socket_cycle(server)
        await http_churn(server)
        after.append(await settled_rss(server))
    print(f"server RSS after cycle 1: {first / 2**20:.1f} MiB; after the next {CYCLES - 1}: "
          f"{', '.join(f'{value / 2**20:.1f}' for value in after)} MiB ({time.monotonic() - started:.0f} s)")

    # then: every later cycle ends within 10 % of the first, and the growth is no per-socket leak
    assert all(abs(value / first - 1) <= DRIFT_BOUND for value in after), (first, after)
    # (RSS moves by several MB from cycle to cycle with the allocator and the collector's timing: 126.7 -> 134.4,
    # 134.8, 134.9, 134.9 MiB in one run, 133.1 -> 134.3, 140.6, 135.3, 141.2 in another; a leak of the ~10 KB a
    # socket held before the GC pacer would add 8 MB a cycle, 32 MB over the run)
    sockets_since = SOCKETS_PER_CYCLE * (CYCLES - 1)
    assert after[-1] - first <= LEAK_PER_SOCKET * sockets_since, (first, after)
