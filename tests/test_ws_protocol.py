"""LeanWebSocketProtocol (graph/ws_protocol.py) under a real uvicorn, over real sockets.

Clients are websockets' asyncio client, or a raw TCP client that does the
handshake itself (to ignore pings, or to break the protocol on purpose).
A few flow-control tests drive the protocol through a fake transport.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus

from graph.ws_frames import accept_key
from graph.ws_protocol import LeanWebSocketProtocol
from tests.support import ServedUvicorn, free_port, serve_uvicorn
from tests.test_ws_frames import client_frame

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
TIMEOUT = 5.0


@contextlib.asynccontextmanager
async def running(app: Callable[..., Awaitable[None]], **options: Any) -> AsyncIterator[ServedUvicorn]:
    """``app`` served by uvicorn with our protocol, in the test's event loop."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), ws=LeanWebSocketProtocol, lifespan="off", log_level="warning", **options
    )
    async with serve_uvicorn(config) as served:
        yield served


@dataclass
class Recorder:
    """What an app saw, for the test to check once it has happened."""

    events: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)

    def record(self, value: Any) -> None:
        self.events.put_nowait(value)

    async def next(self) -> Any:
        return await asyncio.wait_for(self.events.get(), TIMEOUT)


@contextlib.contextmanager
def logged_errors() -> Iterator[list[logging.LogRecord]]:
    """Errors logged to "uvicorn.error" meanwhile."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.ERROR)
    error_logger = logging.getLogger("uvicorn.error")
    error_logger.addHandler(handler)
    try:
        yield records
    finally:
        error_logger.removeHandler(handler)


async def echo(scope: Message, receive: Receive, send: Send) -> None:
    """Accept (with the first subprotocol offered) and echo every message."""
    assert (await receive())["type"] == "websocket.connect"
    subprotocols = scope["subprotocols"]
    await send({"type": "websocket.accept", "subprotocol": subprotocols[0] if subprotocols else None})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})


def accept_then_record(recorder: Recorder) -> Callable[[Message, Receive, Send], Awaitable[None]]:
    """Accept, then record every message received until disconnect."""

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            recorder.record(message)
            if message["type"] == "websocket.disconnect":
                return

    return app


class RawClient:
    """A websocket client over plain asyncio streams: it does only what the test tells it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, path: str = "/") -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert f"\r\nsec-websocket-accept: {accept_key(key)}\r\n".encode() in head
        return cls(reader, writer)

    def send(self, frame: bytes) -> None:
        self.writer.write(frame)

    async def read_frame(self) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload); server frames are final and unmasked."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), TIMEOUT)
        assert first & 0x80 and not first & 0x70, "servers send final frames without RSV bits"
        assert not second & 0x80, "servers never mask"
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await asyncio.wait_for(self.reader.readexactly(length), TIMEOUT)

    async def read_close(self) -> tuple[int | None, str]:
        """Skip pings up to the server's close frame; its code and reason."""
        while True:
            opcode, payload = await self.read_frame()
            if opcode == 0x8:
                if not payload:
                    return None, ""
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode()
            assert opcode == 0x9, f"unexpected opcode {opcode}"

    async def closed_by_server(self) -> bool:
        """True when the server closes the TCP connection (EOF) before the timeout."""
        rest = await asyncio.wait_for(self.reader.read(), TIMEOUT)
        return rest == b"" or self.reader.at_eof()

    def abort(self) -> None:
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.close()


async def closed(ws: ClientConnection) -> None:
    """Wait until the server ends the connection (recv raises)."""
    with pytest.raises((ConnectionClosedOK, ConnectionClosedError)):
        await asyncio.wait_for(ws.recv(), TIMEOUT)


# --- Handshake and scope -------------------------------------------------------------------


async def test_scope_as_uvicorn_builds_it() -> None:
    recorder = Recorder()

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        recorder.record(scope)
        recorder.record(await receive())
        await send({"type": "websocket.accept"})
        await receive()

    async with running(app) as served:
        async with connect(
            served.url("/some%20path?x=1&y=%20"), subprotocols=["one", "two"], additional_headers={"X-Custom": "Value"}
        ) as ws:
            scope = await recorder.next()
            assert await recorder.next() == {"type": "websocket.connect"}
            assert ws.subprotocol is None
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["server"] == ("127.0.0.1", served.port)
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["root_path"] == ""
    assert scope["path"] == "/some path"
    assert scope["raw_path"] == b"/some%20path"
    assert scope["query_string"] == b"x=1&y=%20"
    assert (b"x-custom", b"Value") in scope["headers"]
    assert all(isinstance(name, bytes) and name == name.lower() for name, _ in scope["headers"])
    assert scope["subprotocols"] == ["one", "two"]
    assert scope["state"] == {}
    assert scope["extensions"] == {}


async def test_subprotocol_and_default_headers_in_the_101() -> None:
    async with running(echo) as served:
        async with connect(served.url(), subprotocols=["graphql-transport-ws"]) as ws:
            assert ws.subprotocol == "graphql-transport-ws"
            assert ws.response is not None
            assert ws.response.headers["server"] == "uvicorn"
            assert "date" in ws.response.headers


async def test_accept_headers_from_the_app() -> None:
    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept", "headers": [(b"x-accepted", b"yes")]})
        await receive()

    async with running(app) as served:
        async with connect(served.url()) as ws:
            assert ws.response is not None and ws.response.headers["x-accepted"] == "yes"


async def test_close_before_accept_is_403_and_disconnect_1006() -> None:
    recorder = Recorder()

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close"})
        recorder.record(await receive())
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except OSError as error:
            recorder.record(error)

    async with running(app) as served:
        with pytest.raises(InvalidStatus) as raised:
            async with connect(served.url()):
                pass
        assert raised.value.response.status_code == 403
        assert await recorder.next() == {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        assert isinstance(await recorder.next(), OSError)


async def test_crash_before_accept_is_500_and_logged() -> None:
    async def app(scope: Message, receive: Receive, send: Send) -> None:
        raise ValueError("boom")

    async with running(app) as served:  # uvicorn.Config resets the loggers' handlers: capture after it
        with logged_errors() as errors:
            with pytest.raises(InvalidStatus) as raised:
                async with connect(served.url()):
                    pass
            assert raised.value.response.status_code == 500
    assert any(record.getMessage().startswith("Exception in ASGI application") and record.exc_info for record in errors)


async def test_returning_without_accept_is_500() -> None:
    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()

    async with running(app) as served:  # uvicorn.Config resets the loggers' handlers: capture after it
        with logged_errors() as errors:
            with pytest.raises(InvalidStatus) as raised:
                async with connect(served.url()):
                    pass
            assert raised.value.response.status_code == 500
    assert any("without completing handshake" in record.getMessage() for record in errors)


async def test_invalid_upgrade_request_is_refused() -> None:
    async with running(echo) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
        )
        response = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
    assert response.startswith(b"HTTP/1.1 426 ")
    assert b"sec-websocket-version: 13\r\n" in response


# --- Messages ----------------------------------------------------------------------------------


async def test_text_and_binary_echo() -> None:
    async with running(echo) as served:
        async with connect(served.url()) as ws:
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\x01\xff")
            assert await ws.recv() == b"\x00\x01\xff"
            await ws.send("")
            assert await ws.recv() == ""


async def test_large_messages_both_ways() -> None:
    text = "€" * (1 << 20)  # 3 MiB of UTF-8
    data = os.urandom(1 << 20)
    async with running(echo) as served:
        async with connect(served.url(), max_size=None) as ws:
            await ws.send(text)
            assert await ws.recv() == text
            await ws.send(data)
            assert await ws.recv() == data


async def test_fragmented_message_from_client() -> None:
    async with running(echo) as served:
        async with connect(served.url()) as ws:
            await ws.send(["frag", "men", "ted"])
            assert await ws.recv() == "fragmented"


# --- Closing -----------------------------------------------------------------------------------


async def test_server_close_with_code_and_reason() -> None:
    recorder = Recorder()

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        await send({"type": "websocket.close", "code": 4000, "reason": "bye"})
        recorder.record(await receive())
        try:
            await send({"type": "websocket.send", "text": "after close"})
        except OSError as error:
            recorder.record(error)

    async with running(app) as served:
        async with connect(served.url()) as ws:
            await ws.send("please close")
            await closed(ws)  # websockets calls codes other than 1000 and 1001 errors
            assert (ws.close_code, ws.close_reason) == (4000, "bye")
        assert await recorder.next() == {"type": "websocket.disconnect", "code": 4000, "reason": "bye"}
        assert isinstance(await recorder.next(), OSError)


async def test_client_close_with_code_and_reason() -> None:
    recorder = Recorder()
    async with running(accept_then_record(recorder)) as served:
        async with connect(served.url()) as ws:
            await ws.send("first")
            await ws.close(4001, "done")
            assert ws.close_code == 4001  # the server echoed our code
        assert await recorder.next() == {"type": "websocket.receive", "text": "first"}
        assert await recorder.next() == {"type": "websocket.disconnect", "code": 4001, "reason": "done"}


async def test_client_close_without_code_is_1005_and_echoed_empty() -> None:
    recorder = Recorder()
    async with running(accept_then_record(recorder)) as served:
        client = await RawClient.connect(served.port)
        client.send(client_frame(0x8))
        assert await client.read_close() == (None, "")
        assert await client.closed_by_server()
        client.close()
        assert await recorder.next() == {"type": "websocket.disconnect", "code": 1005, "reason": ""}


async def test_app_returning_after_accept_closes_with_1000() -> None:
    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "only message"})

    async with running(app) as served:
        async with connect(served.url()) as ws:
            assert await ws.recv() == "only message"
            with pytest.raises(ConnectionClosedOK):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert ws.close_code == 1000


async def test_crash_after_accept_closes_with_1011_and_is_logged() -> None:
    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        raise RuntimeError("crash after accept")

    async with running(app) as served:  # uvicorn.Config resets the loggers' handlers: capture after it
        with logged_errors() as errors:
            async with connect(served.url()) as ws:
                await ws.send("trigger")
                with pytest.raises(ConnectionClosedError):
                    await asyncio.wait_for(ws.recv(), TIMEOUT)
                assert ws.close_code == 1011
    assert any(record.getMessage().startswith("Exception in ASGI application") for record in errors)


async def test_client_gone_app_gets_disconnect_and_send_raises_oserror() -> None:
    recorder = Recorder()
    accepted = asyncio.Event()

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        accepted.set()
        recorder.record(await receive())
        recorder.record(await receive())  # asking again does not hang: disconnect again
        try:
            await send({"type": "websocket.send", "text": "anyone?"})
        except OSError as error:
            recorder.record(error)

    async with running(app) as served:
        client = await RawClient.connect(served.port)
        await asyncio.wait_for(accepted.wait(), TIMEOUT)
        client.abort()
        disconnect = {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        assert await recorder.next() == disconnect
        assert await recorder.next() == disconnect
        assert isinstance(await recorder.next(), OSError)


async def test_wrong_message_types_raise_runtime_error() -> None:
    recorder = Recorder()

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        for message in ({"type": "websocket.send", "text": "early"}, {"type": "websocket.http.response.start", "status": 200}):
            try:
                await send(message)
            except RuntimeError as error:
                recorder.record(error)
        await send({"type": "websocket.accept"})
        try:
            await send({"type": "websocket.accept"})
        except RuntimeError as error:
            recorder.record(error)
        await send({"type": "websocket.close"})

    async with running(app) as served:
        async with connect(served.url()) as ws:
            await closed(ws)
            assert ws.close_code == 1000
        for _ in range(3):
            assert isinstance(await recorder.next(), RuntimeError)


# --- Control frames and keepalive ------------------------------------------------------------


async def test_client_ping_is_answered() -> None:
    async with running(echo) as served:
        async with connect(served.url(), ping_interval=None) as ws:
            pong = await ws.ping(b"abcd")
            latency = await asyncio.wait_for(pong, TIMEOUT)
            assert latency >= 0


async def test_pong_carries_the_ping_payload() -> None:
    recorder = Recorder()
    async with running(accept_then_record(recorder)) as served:
        client = await RawClient.connect(served.port)
        client.send(client_frame(0x9, b"payload-123"))
        assert await client.read_frame() == (0xA, b"payload-123")
        client.close()


async def test_server_keepalive_pings_and_continues_after_pongs() -> None:
    recorder = Recorder()
    async with running(accept_then_record(recorder), ws_ping_interval=0.1, ws_ping_timeout=1.0) as served:
        client = await RawClient.connect(served.port)
        loop = asyncio.get_running_loop()
        payloads = []
        for _ in range(3):
            opcode, payload = await client.read_frame()
            answered_at = loop.time()
            assert opcode == 0x9 and len(payload) == 4
            payloads.append(payload)
            client.send(client_frame(0xA, payload))
        assert len(set(payloads)) == 3  # each ping has its own payload
        assert loop.time() - answered_at < 1.0
        client.close()
        assert (await recorder.next())["code"] == 1006


async def test_websockets_client_survives_keepalive() -> None:
    async with running(echo, ws_ping_interval=0.05, ws_ping_timeout=0.5) as served:
        async with connect(served.url(), ping_interval=None) as ws:
            await asyncio.sleep(0.6)  # several server pings, all answered by the client
            await ws.send("still here")
            assert await ws.recv() == "still here"


async def test_keepalive_timeout_closes_a_silent_peer() -> None:
    recorder = Recorder()
    async with running(accept_then_record(recorder), ws_ping_interval=0.1, ws_ping_timeout=0.2) as served:
        client = await RawClient.connect(served.port)
        opcode, _ = await client.read_frame()
        assert opcode == 0x9  # ignored on purpose
        assert await client.read_close() == (1011, "keepalive ping timeout")
        assert await client.closed_by_server()
        client.close()
        assert await recorder.next() == {"type": "websocket.disconnect", "code": 1011, "reason": "keepalive ping timeout"}


async def test_no_pings_when_keepalive_is_off() -> None:
    async with running(echo, ws_ping_interval=None) as served:
        client = await RawClient.connect(served.port)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.reader.read(1), 0.3)
        client.close()


# --- Protocol errors from the peer -------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (client_frame(0x1, b"not masked", masked=False), 1002),
        (client_frame(0x1, b"bad \xff utf-8"), 1007),
        (client_frame(0x2, b"", length=2048), 1009),  # the header alone is enough
        (client_frame(0x1, b"x", rsv=4), 1002),
        (client_frame(0x8, struct.pack("!H", 1005)), 1002),
    ],
)
async def test_protocol_errors_close_with_their_code(frame: bytes, code: int) -> None:
    recorder = Recorder()
    async with running(accept_then_record(recorder), ws_max_size=1024) as served:
        client = await RawClient.connect(served.port)
        client.send(frame)
        close_code, _ = await client.read_close()
        assert close_code == code
        assert await client.closed_by_server()
        client.close()
        disconnect = await recorder.next()
        assert disconnect["type"] == "websocket.disconnect" and disconnect["code"] == code


# --- Server shutdown ---------------------------------------------------------------------------


async def test_shutdown_closes_open_sockets_with_1012() -> None:
    recorder = Recorder()
    async with running(accept_then_record(recorder)) as served:
        async with connect(served.url()) as ws:
            await ws.send("hello")
            assert await recorder.next() == {"type": "websocket.receive", "text": "hello"}
            await served.stop()
            await closed(ws)
            assert ws.close_code == 1012
        assert await recorder.next() == {"type": "websocket.disconnect", "code": 1012, "reason": ""}
        assert not served.server.server_state.connections
        assert not served.server.server_state.tasks


# --- Flow control, through a fake transport ----------------------------------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.reading = True
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("10.0.0.1", 5000), "sockname": ("10.0.0.2", 80)}.get(name, default)


def upgrade_request() -> bytes:
    return (
        b"GET /graphql HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
        b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def start_protocol(app: Callable[..., Awaitable[None]], **options: Any) -> tuple[LeanWebSocketProtocol, FakeTransport, ServerState]:
    config = uvicorn.Config(app, lifespan="off", log_level="warning", ws_ping_interval=None, **options)
    server_state = ServerState()
    protocol = LeanWebSocketProtocol(config, server_state, {}, _loop=asyncio.get_running_loop())
    transport = FakeTransport()
    protocol.connection_made(transport)
    protocol.data_received(upgrade_request())
    return protocol, transport, server_state


async def test_protocol_instances_have_no_dict_and_register_themselves() -> None:
    finish = asyncio.Event()

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await finish.wait()

    protocol, transport, server_state = start_protocol(app)
    assert not hasattr(protocol, "__dict__")
    await settle()
    assert transport.written.startswith(b"HTTP/1.1 101 ")
    assert server_state.connections == {protocol} and len(server_state.tasks) == 1
    finish.set()
    await settle()
    assert not server_state.tasks
    assert transport.written.endswith(b"\x88\x02\x03\xe8")  # close 1000 once the app returned
    protocol.connection_lost(None)
    assert not server_state.connections


async def test_reading_pauses_past_ws_max_queue_and_resumes_when_drained() -> None:
    may_receive = asyncio.Event()
    received: list[Message] = []

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await may_receive.wait()
        while len(received) < 5:
            received.append(await receive())
            await asyncio.sleep(0)
            assert transport.reading == (len(received) >= 4), len(received)  # resumed at 5 // 4 = 1 left

    protocol, transport, _ = start_protocol(app, ws_max_queue=4)
    await settle()
    for index in range(4):
        protocol.data_received(client_frame(0x1, str(index).encode()))
        assert transport.reading
    protocol.data_received(client_frame(0x1, b"4"))
    assert not transport.reading  # 5 waiting > ws_max_queue
    may_receive.set()
    await settle()
    await settle()
    assert [message["text"] for message in received] == ["0", "1", "2", "3", "4"]
    assert transport.reading
    protocol.connection_lost(None)


async def test_send_waits_while_writing_is_paused() -> None:
    sent = asyncio.Event()

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        protocol.pause_writing()
        await send({"type": "websocket.send", "text": "held"})
        sent.set()

    protocol, transport, _ = start_protocol(app)
    await settle()
    assert not sent.is_set()
    assert text_frame_bytes("held") not in transport.written
    protocol.resume_writing()
    await asyncio.wait_for(sent.wait(), TIMEOUT)
    assert text_frame_bytes("held") in transport.written
    protocol.connection_lost(None)


async def test_send_paused_when_the_connection_is_lost_raises_oserror() -> None:
    outcome: list[BaseException] = []

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        protocol.pause_writing()
        try:
            await send({"type": "websocket.send", "text": "never"})
        except OSError as error:
            outcome.append(error)

    protocol, _, server_state = start_protocol(app)
    await settle()
    protocol.connection_lost(ConnectionResetError())
    await settle()
    assert len(outcome) == 1
    assert not server_state.tasks


def text_frame_bytes(text: str) -> bytes:
    payload = text.encode()
    return bytes((0x81, len(payload))) + payload
