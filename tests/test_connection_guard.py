"""Connection limits over real TCP against a real uvicorn: header deadlines, the connection cap, websocket caps.

Raw sockets, since a polite client (httpx, websockets) never drips headers,
idles forever or floods pings without reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from server.app import create_app
from server.cli import uvicorn_config
from server.settings import ConnectionLimits, Settings
from tests.conftest import token_for
from tests.realtime_support import TRANSPORT_WS, GraphQLSocket, Rejected
from tests.server_process import READY, Server
from tests.support import TEST_JWT_SECRET, ServedUvicorn, free_port, rss_bytes, serve_uvicorn

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"
GRAPHQL_WS = "graphql-ws"


@asynccontextmanager
async def serving(settings: Settings, limits: ConnectionLimits) -> AsyncIterator[ServedUvicorn]:
    """The app on a real uvicorn with ``limits``, as ``portraits serve`` runs it."""
    app = create_app(replace(settings, connections=limits))
    config = uvicorn_config(app, host="127.0.0.1", port=free_port(), log_level="warning", connections=limits)
    async with serve_uvicorn(config) as served:
        yield served


@asynccontextmanager
async def raw_connection(served: ServedUvicorn) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def read_until_closed(reader: asyncio.StreamReader, within: float) -> bytes:
    """All the server sent until it closed the connection (a reset counts); fails if still open after ``within``."""
    received = b""
    async with asyncio.timeout(within):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines if line)
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.05)


async def healthz_ok(served: ServedUvicorn) -> bool:
    async with httpx.AsyncClient() as http:
        try:
            response = await http.get(served.url("/healthz", "http"))
        except httpx.TransportError:
            return False
    return response.status_code == 200


# Header deadlines and idle keep-alive connections.


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(settings: Settings) -> None:
    async with serving(settings, ConnectionLimits(header_timeout=0.5)) as served:
        # given a client that connects and says nothing
        async with raw_connection(served) as (reader, _):
            # when it waits, then the server closes the connection without a word
            assert await read_until_closed(reader, within=10) == b""
        # and the server still answers others
        assert await healthz_ok(served)


async def test_a_client_dripping_its_headers_is_closed_before_they_end(settings: Settings) -> None:
    async with serving(settings, ConnectionLimits(header_timeout=1.0)) as served, raw_connection(served) as (
        reader,
        writer,
    ):
        # given a client that sends a request line, then one header byte every 0.1 s (a slowloris)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")

        async def drip() -> None:
            with contextlib.suppress(OSError):
                while True:
                    await asyncio.sleep(0.1)
                    writer.write(b"a")
                    await writer.drain()

        dripping = asyncio.create_task(drip())
        try:
            # when it keeps dripping, then the server closes it with no answer, long before it could finish
            assert await read_until_closed(reader, within=10) == b""
        finally:
            dripping.cancel()


async def test_an_idle_keep_alive_connection_is_closed(settings: Settings) -> None:
    async with serving(settings, ConnectionLimits(keep_alive_timeout=1, header_timeout=30)) as served, raw_connection(
        served
    ) as (reader, writer):
        # given a keep-alive connection that got its answer
        writer.write(HEALTHZ)
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers.get("connection") != "close"
        # when it then sends nothing, then the server closes it
        assert await read_until_closed(reader, within=10) == b""


async def test_a_client_dripping_its_next_request_after_a_response_is_closed(settings: Settings) -> None:
    # given a server whose keep-alive timer is long, so that only the header deadline can end the connection
    async with serving(settings, ConnectionLimits(keep_alive_timeout=60, header_timeout=1.0)) as served, raw_connection(
        served
    ) as (reader, writer):
        writer.write(HEALTHZ)
        status, _, _ = await read_response(reader)
        assert status == 200

        # when the client then drips a next request a byte at a time
        async def drip() -> None:
            with contextlib.suppress(OSError):
                for byte in b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"a" * 1000:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.1)

        dripping = asyncio.create_task(drip())
        try:
            # then the server closes it within the header timeout of its first byte, not after its keep-alive
            assert await read_until_closed(reader, within=20) == b""
        finally:
            dripping.cancel()


async def test_a_slow_request_is_not_cut_by_the_header_timeout(settings: Settings) -> None:
    # given a header timeout shorter than a request that takes long to arrive (its body, dripped steadily over
    # three header timeouts, stands in for a slow request: headers were on time, the body is within its deadline)
    async with serving(settings, ConnectionLimits(header_timeout=0.5)) as served, raw_connection(served) as (
        reader,
        writer,
    ):
        body = b'{"query": "{ __typename }"}'
        writer.write(
            b"POST /graphql HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        await writer.drain()
        # when the body comes a byte at a time over 1.5 s
        for byte in range(len(body)):
            await asyncio.sleep(1.5 / len(body))
            writer.write(body[byte : byte + 1])
            await writer.drain()
        # then the request is answered
        status, _, answer = await read_response(reader)
        assert status == 200 and orjson.loads(answer) == {"data": {"__typename": "Query"}}


# The per-process connection cap.


async def test_over_the_connection_cap_a_client_gets_a_json_503_and_service_resumes(settings: Settings) -> None:
    limits = ConnectionLimits(max_connections=3, header_timeout=30)
    async with serving(settings, limits) as served, AsyncExitStack() as stack:
        # given three idle connections holding every place
        idle = [await stack.enter_async_context(raw_connection(served)) for _ in range(3)]

        # when a fourth client asks for /healthz
        async def refused() -> bool:
            async with raw_connection(served) as (reader, writer):
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                received = await read_until_closed(reader, within=10)
            return received.startswith(b"HTTP/1.1 503")

        await eventually(refused)  # (once the server has taken the three in)
        async with raw_connection(served) as (reader, writer):
            writer.write(HEALTHZ)
            status, headers, body = await read_response(reader)
            # then it gets a 503 with a GraphQL error, and the connection is closed
            assert status == 503
            assert headers["content-type"] == "application/json" and headers["connection"] == "close"
            error = orjson.loads(body)["errors"][0]
            assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE" and error["extensions"]["limit"] == 3
            assert "too many open connections" in error["message"]
            assert await read_until_closed(reader, within=10) == b""

        # when one of the idle connections closes, then /healthz is served again
        _, writer = idle[0]
        writer.close()
        await eventually(lambda: healthz_ok(served))


# Websocket peers that flood and never read.


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame with a zero mask (so the payload goes as is)."""
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    else:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    return header + b"\x00\x00\x00\x00" + payload


def rss_kb(pid: int) -> int:
    return rss_bytes(pid) // 1024


def test_a_ping_flood_that_never_reads_is_aborted_with_bounded_server_memory(
    tmp_path: Path, servers: list[Server], database_url: str
) -> None:
    # given a `portraits serve` process and an authenticated websocket whose client reads nothing more
    server = Server(tmp_path, DATABASE_URL=database_url, JWT_SECRET=TEST_JWT_SECRET, WORKERS="0")
    servers.append(server)
    server.wait_for(READY)
    flood = socket.socket()
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel holds little of what we do not read
    flood.settimeout(10)
    flood.connect(("127.0.0.1", server.port))
    flood.sendall(
        b"GET /graphql HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
    )
    received = b""
    while b"\r\n\r\n" not in received:
        received += flood.recv(4096)
    assert received.startswith(b"HTTP/1.1 101")
    init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token_for(uuid.uuid4())}"}}
    flood.sendall(client_frame(0x1, orjson.dumps(init)))
    while b"connection_ack" not in received:
        received += flood.recv(4096)
    baseline = rss_kb(server.process.pid)

    # when it sends pings as fast as it can and never reads a pong
    pings = client_frame(0x9, b"p" * 125) * 512  # 67 KB of pings, 64 KB of pongs
    peak = baseline
    aborted = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            flood.sendall(pings)
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            aborted = True
            break
        peak = max(peak, rss_kb(server.process.pid))
    flood.close()

    # then the server aborted it, having grown by a few MB at most (unbounded: 90 -> 228 MB in 8 s)
    assert aborted, "the flooding socket was never cut"
    assert peak - baseline < 32 * 1024, f"RSS grew {peak - baseline} KB"
    # and it serves others as before
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200


# Websockets per user and per client address.


async def refusal(url: str, token: str, protocol: str = TRANSPORT_WS) -> tuple[int | None, str]:
    """Open a socket expected to be refused: the close code and reason it got (fails on an ack)."""
    connection = await websockets.connect(url, subprotocols=[Subprotocol(protocol)], open_timeout=10)
    try:
        with contextlib.suppress(ConnectionClosed):
            await connection.send(orjson.dumps({"type": "connection_init", "payload": {
                "Authorization": f"Bearer {token}"}}).decode())
            async with asyncio.timeout(10):
                while True:
                    message = orjson.loads(await connection.recv())
                    assert message["type"] != "connection_ack", "accepted"
    finally:
        await connection.close()
    return connection.close_code, connection.close_reason or ""


async def test_the_websocket_after_a_users_cap_is_refused_with_4429_until_one_closes(settings: Settings) -> None:
    async with serving(settings, ConnectionLimits(websockets_per_user=2)) as served, AsyncExitStack() as stack:
        url = served.url("/graphql")
        alice = uuid.uuid4()
        # given Alice with two sockets open
        first = await stack.enter_async_context(GraphQLSocket.open(url, token=token_for(alice)))
        await stack.enter_async_context(GraphQLSocket.open(url, token=token_for(alice)))

        # when she opens a third, then it is closed with 4429 and a reason naming the cap
        assert await refusal(url, token_for(alice)) == (4429, "Too many websockets for this user (limit 2)")
        # and on graphql-ws (legacy) she gets a connection_error saying the same, then the same close
        with pytest.raises(Rejected) as legacy:
            async with GraphQLSocket.open(url, token=token_for(alice), protocol=GRAPHQL_WS):
                pass
        reason = "Too many websockets for this user (limit 2)"
        assert legacy.value.payload == {"message": reason, "code": "RATE_LIMITED"}
        assert await refusal(url, token_for(alice), GRAPHQL_WS) == (4429, reason)
        # and Bob, from the same address, is not affected
        async with GraphQLSocket.open(url, token=token_for(uuid.uuid4())):
            pass

        # when one of hers closes, then a new one is accepted
        await first.connection.close()
        async with GraphQLSocket.open(url, token=token_for(alice)) as again:
            await again.send({"type": "ping"})
            assert (await again.receive())["type"] == "pong"


async def test_a_users_websocket_count_is_exact_under_concurrency_and_released_on_every_close(
    settings: Settings,
) -> None:
    async with serving(settings, ConnectionLimits(websockets_per_user=5)) as served:
        url = served.url("/graphql")
        alice = uuid.uuid4()
        # given twelve sockets of Alice's opened at once
        connections = await asyncio.gather(*[
            websockets.connect(url, subprotocols=[Subprotocol(TRANSPORT_WS)], open_timeout=10) for _ in range(12)
        ])
        init = orjson.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token_for(alice)}"}})
        await asyncio.gather(*[connection.send(init.decode()) for connection in connections])

        async def outcome(connection: Any) -> str:
            try:
                return str(orjson.loads(await asyncio.wait_for(connection.recv(), 10))["type"])
            except ConnectionClosed:
                return str(connection.close_code)

        # then exactly five are acknowledged and seven refused with 4429
        outcomes = await asyncio.gather(*[outcome(connection) for connection in connections])
        assert sorted(outcomes) == ["4429"] * 7 + ["connection_ack"] * 5
        accepted = [c for c, o in zip(connections, outcomes, strict=True) if o == "connection_ack"]

        # when one accepted socket is dropped without a close handshake, one is closed politely, and one is
        # closed by the server (a second connection_init: 4429 "Too many initialisation requests")
        accepted[0].transport.abort()
        await accepted[1].close()
        await accepted[2].send(init.decode())
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(accepted[2].recv(), 10)

        # then three new sockets are accepted again, and not a fourth
        async def three_more() -> bool:
            try:
                async with AsyncExitStack() as stack:
                    for _ in range(3):
                        await stack.enter_async_context(GraphQLSocket.open(url, token=token_for(alice)))
                    return await refusal(url, token_for(alice)) == (4429, "Too many websockets for this user (limit 5)")
            except Rejected:
                return False  # a dropped socket the server has not noticed yet

        await eventually(three_more)
        for connection in connections:
            await connection.close()


async def test_the_websocket_after_an_address_cap_is_refused_with_4429_until_one_closes(settings: Settings) -> None:
    async with serving(settings, ConnectionLimits(websockets_per_address=3)) as served, AsyncExitStack() as stack:
        url = served.url("/graphql")
        # given three sockets from 127.0.0.1, each another user's, one not even initialised
        first = await stack.enter_async_context(GraphQLSocket.open(url, token=token_for(uuid.uuid4())))
        await stack.enter_async_context(GraphQLSocket.open(url, token=token_for(uuid.uuid4())))
        await stack.enter_async_context(
            await websockets.connect(url, subprotocols=[Subprotocol(TRANSPORT_WS)], open_timeout=10)
        )

        # when a fourth user connects from the same address, then it is closed with 4429 before any init
        assert await refusal(url, token_for(uuid.uuid4())) == (4429, "Too many websockets for this address (limit 3)")

        # when one closes, then the next is accepted
        await first.connection.close()
        async with GraphQLSocket.open(url, token=token_for(uuid.uuid4())) as again:
            await again.send({"type": "ping"})
            assert (await again.receive())["type"] == "pong"


# The descriptor limit.


def test_a_cap_that_cannot_fit_the_open_file_limit_is_lowered_with_a_warning() -> None:
    # given a process whose hard RLIMIT_NOFILE is 300, when the guard is made for MAX_CONNECTIONS=10000
    script = (
        "import logging, resource\n"
        "logging.basicConfig(level=logging.WARNING, format='%(message)s')\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (200, 300))\n"
        "from server.connection_guard import ConnectionGuard\n"
        "from server.http_head import HeadLimitedHttpToolsProtocol\n"
        "from server.settings import ConnectionLimits\n"
        "limits = ConnectionLimits(max_connections=10000)\n"
        "guard = ConnectionGuard.for_process(limits, http=HeadLimitedHttpToolsProtocol)\n"
        "print('cap', guard.max_connections, 'soft', resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    # then the soft limit is raised to the hard one, and the cap is what fits beside the reserved descriptors
    assert "cap 44 soft 300" in done.stdout
    assert "MAX_CONNECTIONS=10000 needs 10256 file descriptors but RLIMIT_NOFILE allows 300" in done.stderr
    assert "serving at most 44 connections" in done.stderr
