"""The websocket limits the README states, as uvicorn's protocol serves them under our app and config.

Each test runs the real app (``create_app``) under a real uvicorn configured
by ``server.cli.uvicorn_config``, with the keepalive shortened so the test is
quick, and talks to it over TCP as a client would.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
import weakref
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import orjson
import pytest
import websockets
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import Event
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from server.app import create_app
from server.cli import uvicorn_config
from server.settings import Settings, WebSocketConfig
from server.shutdown import Draining
from tests.conftest import token_for
from tests.realtime_support import (
    JOB_UPDATED,
    LEGACY_WS,
    PORTRAIT_JOBS,
    TRANSPORT_WS,
    GraphQLSocket,
    Rejected,
    error_codes_of,
)
from tests.support import ServedUvicorn, free_port, serve_uvicorn, subscriptions_live

TIMEOUT = 10.0


@asynccontextmanager
async def serving(settings: Settings, websocket: WebSocketConfig = WebSocketConfig()) -> AsyncIterator[ServedUvicorn]:
    """The app on a real uvicorn with ``websocket`` options, as ``portraits serve`` runs it."""
    app = create_app(settings)
    config = uvicorn_config(app, host="127.0.0.1", port=free_port(), log_level="warning", websocket=websocket)
    async with serve_uvicorn(config) as served:
        yield served


class SansIOClient:
    """A graphql-transport-ws client on websockets' sans-io ClientProtocol: it answers pings only when told.

    (websockets' asyncio client always answers pings; a peer that goes silent needs this.)
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: ClientProtocol) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = protocol
        self.events: deque[Event] = deque()

    @classmethod
    async def connect(cls, url: str, token: str) -> SansIOClient:
        uri = parse_uri(url)
        reader, writer = await asyncio.open_connection(uri.host, uri.port)
        client = cls(reader, writer, ClientProtocol(uri, subprotocols=[Subprotocol(TRANSPORT_WS)]))
        client.protocol.send_request(client.protocol.connect())
        client.flush()
        response = await client.next_event()
        assert isinstance(response, Response) and response.status_code == 101, response
        assert client.protocol.handshake_exc is None, client.protocol.handshake_exc
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        client.protocol.send_text(orjson.dumps(init))
        client.flush()
        ack = await client.next_event()
        assert isinstance(ack, Frame) and orjson.loads(ack.data)["type"] == "connection_ack", ack
        return client

    def flush(self) -> None:
        """Send what the protocol has queued (our frames, and pongs to the server's pings)."""
        for data in self.protocol.data_to_send():
            self.writer.write(data)

    async def next_event(self) -> Event:
        while not self.events:
            data = await asyncio.wait_for(self.reader.read(65536), TIMEOUT)
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            self.events.extend(self.protocol.events_received())
            if not data and not self.events:
                raise EOFError("the server closed the connection")
        return self.events.popleft()

    async def closed_by_server(self) -> bool:
        """True when the server ends the TCP connection."""
        with pytest.raises(EOFError):
            while True:
                await self.next_event()
        return True

    def close(self) -> None:
        self.writer.close()


async def test_the_server_pings_and_closes_a_socket_whose_pong_is_late(settings: Settings, alice: uuid.UUID) -> None:
    keepalive = WebSocketConfig(ping_interval=0.1, ping_timeout=0.5)
    async with serving(settings, keepalive) as served:
        client = await SansIOClient.connect(served.url("/graphql"), token_for(alice))
        try:
            # given a client that answers the server's keepalive pings: the socket stays open
            for _ in range(3):
                frame = await client.next_event()
                assert isinstance(frame, Frame) and frame.opcode == Opcode.PING, frame
                client.flush()  # our protocol queued the pong
            # when it stops answering
            frame = await client.next_event()
            assert isinstance(frame, Frame) and frame.opcode == Opcode.PING, frame
            client.protocol.data_to_send()  # the pong, never sent
            # then the server closes it: 1011 keepalive ping timeout, and ends the connection
            frame = await client.next_event()
            assert isinstance(frame, Frame) and frame.opcode == Opcode.CLOSE, frame
            close = client.protocol.close_rcvd
            assert close is not None
            assert (close.code, close.reason) == (1011, "keepalive ping timeout")
            assert await client.closed_by_server()
        finally:
            client.close()


async def test_a_client_message_over_the_size_limit_closes_the_socket_with_1009(
    settings: Settings, alice: uuid.UUID
) -> None:
    limited = WebSocketConfig(max_message_bytes=64 * 1024)
    async with (
        serving(settings, limited) as served,
        GraphQLSocket.open(served.url("/graphql"), token=token_for(alice)) as socket,
    ):
        # given a message just under the limit: it is read and answered
        await socket.send({"type": "ping", "payload": {"pad": "x" * 60_000}})
        assert (await socket.receive())["type"] == "pong"
        # when one is over it, then the server closes the socket: 1009 message too big
        await socket.send({"type": "ping", "payload": {"pad": "x" * 70_000}})
        with pytest.raises(Rejected) as closed:
            await socket.receive()
    assert closed.value.code == 1009


async def test_shutdown_closes_open_sockets_with_1012(settings: Settings, alice: uuid.UUID) -> None:
    async with serving(settings) as served:
        async with GraphQLSocket.open(served.url("/graphql"), token=token_for(alice)) as socket:
            # given a socket with a live subscription
            await socket.subscribe(PORTRAIT_JOBS)
            await socket.send({"type": "ping"})
            assert (await socket.receive())["type"] == "pong"
            # when the server shuts down, then the socket is closed with 1012 (service restart: reconnect)
            await served.stop()
            with pytest.raises(Rejected) as closed:
                await socket.receive()
        assert closed.value.code == 1012
        # and every connection and its ASGI task ended within the graceful shutdown
        assert not served.server.server_state.connections
        assert not served.server.server_state.tasks


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_draining_tells_each_subscription_then_closes_1012_and_ends_sockets_opened_after(
    settings: Settings, alice: uuid.UUID, protocol: str
) -> None:
    draining = Draining()
    app = create_app(settings, draining=draining)
    config = uvicorn_config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    async with (
        serve_uvicorn(config) as served,
        GraphQLSocket.open(served.url("/graphql"), protocol=protocol, token=token_for(alice)) as socket,
    ):
        # given a socket with two live subscriptions, and one that has ended (stopped by the client)
        live = [await socket.subscribe(PORTRAIT_JOBS), await socket.subscribe(PORTRAIT_JOBS)]
        await socket.stop(await socket.subscribe(PORTRAIT_JOBS))
        await subscriptions_live(served.url("", scheme="http"), 2)

        # when the server begins to stop (what `serve` runs before uvicorn's own shutdown)
        await draining.begin(timeout=5)

        # then each live subscription gets the protocol's error message with SERVICE_UNAVAILABLE, then the close 1012
        ended: list[tuple[str, list[str]]] = []
        with pytest.raises(Rejected) as closed:
            while True:
                message = await socket.next_result(timeout=TIMEOUT)
                assert message["type"] in ("error", "complete"), message
                if message["type"] == "error":
                    ended.append((message["id"], error_codes_of(message)))
        assert sorted(ended) == [(operation, ["SERVICE_UNAVAILABLE"]) for operation in sorted(live)]
        assert closed.value.code == 1012

        # and a socket opened meanwhile is closed the same way, before anything starts on it
        with pytest.raises((Rejected, ConnectionClosed)) as refused:
            async with GraphQLSocket.open(served.url("/graphql"), protocol=protocol, token=token_for(alice)) as late:
                await late.subscribe(PORTRAIT_JOBS)
                await late.receive(timeout=TIMEOUT)
        error = refused.value
        if isinstance(error, ConnectionClosed):  # closed before its connection_init was even sent
            assert error.rcvd is not None and error.rcvd.code == 1012
        else:
            assert isinstance(error, Rejected) and error.code == 1012


@pytest.mark.parametrize("deflate", [False, True], ids=["default: off", "WS_PER_MESSAGE_DEFLATE=true"])
async def test_per_message_deflate_is_negotiated_only_when_turned_on(settings: Settings, deflate: bool) -> None:
    # a client that offers permessage-deflate, as browsers do
    async with (
        serving(settings, replace(settings.websocket, per_message_deflate=deflate)) as served,
        websockets.connect(
            served.url("/graphql"), subprotocols=[Subprotocol(TRANSPORT_WS)], compression="deflate"
        ) as raw,
    ):
        assert raw.response is not None
        extensions = raw.response.headers.get("Sec-WebSocket-Extensions", "")
    assert ("permessage-deflate" in extensions) is deflate


async def test_a_closed_sockets_connection_is_freed_by_reference_counting(settings: Settings, alice: uuid.UUID) -> None:
    # (graphql-core's executor of a subscription lies on a reference cycle that outlives the socket: under the
    # server's GC pacer such cycles wait for a full collection, so it must not reach uvicorn's connection)
    async with serving(settings) as served:
        gc.collect()
        gc.disable()  # only reference counting frees anything from here on
        try:
            async with GraphQLSocket.open(served.url("/graphql"), token=token_for(alice)) as socket:
                # given a socket whose subscription ran (and ended: no such job)
                await socket.subscribe(JOB_UPDATED, {"id": str(uuid.uuid4())})
                assert error_codes_of(await socket.next_result()) == ["NOT_FOUND"]
                [connection] = served.server.server_state.connections
                probe = weakref.ref(connection)
                del connection
            # when the client closes it, then uvicorn's connection is freed without a garbage collection
            async with asyncio.timeout(TIMEOUT):
                while probe() is not None:
                    await asyncio.sleep(0.01)
        finally:
            gc.enable()


class Records(logging.Handler):
    """Every record a logger handles, kept for the test to read."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_text_frame_that_is_not_utf8_closes_with_1007_and_logs_no_crash(
    settings: Settings, alice: uuid.UUID
) -> None:
    uvicorn_errors = logging.getLogger("uvicorn.error")
    seen = Records()
    async with serving(settings) as served:
        uvicorn_errors.addHandler(seen)  # (after uvicorn's Config: configuring its logging drops handlers)
        try:
            async with GraphQLSocket.open(served.url("/graphql"), token=token_for(alice)) as socket:
                # given an initialised socket, when the client sends a text frame holding an encoded lone surrogate
                await socket.connection.send(b'{"type": "ping", "payload": "\xed\xa0\x80"}', text=True)
                # then the server closes it with 1007, invalid frame payload data, as RFC 6455 says
                with pytest.raises(Rejected) as closed:
                    await socket.receive()
        finally:
            uvicorn_errors.removeHandler(seen)
    assert closed.value.code == 1007
    # and uvicorn's record of it is an INFO line without a traceback, not an ERROR
    [record] = [record for record in seen.records if "UTF-8" in record.getMessage()]
    assert record.levelno == logging.INFO and record.exc_info is None, (record.levelname, record.exc_info)
    assert not [record for record in seen.records if record.levelno >= logging.ERROR]


async def test_a_malformed_message_then_a_frame_that_is_not_utf8_at_once_log_no_crash(
    settings: Settings, alice: uuid.UUID
) -> None:
    uvicorn_errors = logging.getLogger("uvicorn.error")
    seen = Records()
    async with serving(settings) as served:
        uvicorn_errors.addHandler(seen)  # (after uvicorn's Config: configuring its logging drops handlers)
        client = await SansIOClient.connect(served.url("/graphql"), token_for(alice))
        try:
            # given a message the app closes the socket for (4400), and in the same TCP segment a text frame that is
            # not UTF-8, which uvicorn closes the socket for itself (1007) before the app answers the first
            client.protocol.send_text(orjson.dumps({"type": "subscribe", "id": "1", "payload": None}))
            client.protocol.send_text(b"\xed\xa0\x80")
            client.writer.write(b"".join(client.protocol.data_to_send()))
            # when the app closes the socket uvicorn has closed already
            closing = await client.next_event()
            assert await client.closed_by_server()
        finally:
            client.close()
            uvicorn_errors.removeHandler(seen)
    # then the client saw uvicorn's close, and nothing was logged as an error (no "Exception in ASGI application")
    assert isinstance(closing, Frame) and closing.opcode == Opcode.CLOSE, closing
    assert int.from_bytes(closing.data[:2], "big") == 1007
    errors = [record.getMessage() for record in seen.records if record.levelno >= logging.ERROR]
    assert not errors, errors
