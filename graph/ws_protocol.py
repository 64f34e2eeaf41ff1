"""A lean websocket protocol for uvicorn, because idle GraphQL subscribers must cost little.

One server process is to hold 10,000 idle subscription sockets at under
30 KB each. uvicorn's own websocket protocol (websockets_sansio_impl) costs
~17 KB per idle connection by itself: a large instance __dict__, an
asyncio.Queue (three deques and an Event, ~3 KB), an asyncio.Event for
``writable``, the handshake request and response, and websockets' sans-io
``ServerProtocol``, whose parser generator keeps the handshake request alive
(~5 KB).

This one keeps ``__slots__``, a message list only while messages wait, a
future only while the app waits (to receive, or to write while the
transport is paused), one timer at a time, and nothing of the handshake
once the app has answered it; the instance itself is 168 bytes. Measured
with tracemalloc in the server process over 500 idle accepted sockets (app:
accept, then await receive; everything the connection keeps, transport,
task and scope included), per connection: ~18.7 KB with
``ws="websockets-sansio"`` (deflate off; ~66 KB with uvicorn's default
deflate when the client offers it), ~6.5 KB with this class.

Plug it in with ``uvicorn.Config(ws=LeanWebSocketProtocol)``. It behaves as
uvicorn's protocol does under the ASGI websocket spec 2.3, except that:

- ``ws_per_message_deflate`` is ignored: no extension is ever negotiated
  (subscription messages are small, and zlib state costs ~40 KB a socket);
- the ``websocket.http.response`` extension is not offered: refusing a
  socket is ``websocket.close`` before accept (HTTP 403).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote

from uvicorn.protocols.utils import (
    ClientDisconnected,
    get_client_addr,
    get_local_addr,
    get_path_with_query_string,
    get_remote_addr,
    is_ssl,
)

from graph.ws_frames import (
    CLOSE_ABNORMAL,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    CLOSE_SERVICE_RESTART,
    MAX_HANDSHAKE_SIZE,
    BinaryMessage,
    Close,
    FrameParser,
    HandshakeError,
    HandshakeRequest,
    Ping,
    Pong,
    ProtocolViolation,
    TextMessage,
    accept_response,
    binary_frame,
    check_handshake,
    close_frame,
    error_response,
    header_tokens,
    parse_request_head,
    ping_frame,
    pong_frame,
    split_request_head,
    text_frame,
)

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

Message = dict[str, Any]

logger = logging.getLogger("uvicorn.error")

# How long to wait for the peer's close frame after sending ours (as uvicorn does).
CLOSE_TIMEOUT = 10.0
KEEPALIVE_TIMEOUT_REASON = "keepalive ping timeout"


class _State(enum.IntEnum):
    HANDSHAKE = 0  # reading the HTTP upgrade request
    CONNECTING = 1  # the app runs; it has neither accepted nor refused
    OPEN = 2  # accepted: frames both ways
    CLOSING = 3  # our close frame is sent; waiting for the peer's
    CLOSED = 4  # the transport is closed or lost: nothing more goes out


class LeanWebSocketProtocol(asyncio.Protocol):
    """An ASGI websocket connection over an upgraded uvicorn transport, with as little state as it can.

    Shared objects (config, server state, loop, logger) are referenced, never
    copied; what only the handshake needs is dropped once the app answers it.
    """

    __slots__ = (
        "_config",
        "_server_state",
        "_app_state",
        "_loop",
        "_transport",
        "_state",
        "_pending",
        "_scope",
        "_accept_key",
        "_parser",
        "_inbox",
        "_disconnect",
        "_receive_waiter",
        "_drain_waiter",
        "_reading_paused",
        "_timer",
        "_ping_payload",
    )

    _config: Config
    _server_state: ServerState
    _app_state: dict[str, Any]
    _loop: asyncio.AbstractEventLoop
    _transport: asyncio.Transport
    _state: _State
    _pending: bytes | None  # the request head so far; then bytes a client sent before the app accepted
    _scope: Message | None  # until the app accepts or refuses (for the access log)
    _accept_key: str | None  # Sec-WebSocket-Accept, until the app accepts
    _parser: FrameParser | None
    _inbox: list[Message] | None  # messages the app has not received yet; None when there are none
    _disconnect: Message | None  # the disconnect message, returned by every receive once the inbox is empty
    _receive_waiter: asyncio.Future[None] | None
    _drain_waiter: asyncio.Future[None] | None  # exists only while the transport has paused writing
    _reading_paused: bool
    _timer: asyncio.TimerHandle | None  # next keepalive ping, pong deadline, or close deadline
    _ping_payload: bytes | None  # the keepalive ping awaiting its pong

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._loop = _loop or asyncio.get_event_loop()
        self._transport = None  # type: ignore[assignment]  # set by connection_made
        self._state = _State.HANDSHAKE
        self._pending = None
        self._scope = None
        self._accept_key = None
        self._parser = None
        self._inbox = None
        self._disconnect = None
        self._receive_waiter = None
        self._drain_waiter = None
        self._reading_paused = False
        self._timer = None
        self._ping_payload = None

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._server_state.connections.add(self)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        """Free everything per connection; the app's receive gets disconnect (1006 unless it was closed)."""
        self._state = _State.CLOSED
        self._cancel_timer()
        self._set_disconnect(CLOSE_ABNORMAL, "")
        self._release_writers()
        self._server_state.connections.discard(self)  # type: ignore[arg-type]
        self._parser = None
        self._pending = None
        self._accept_key = None  # (the scope stays: an app task yet to start still needs it)

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state is _State.OPEN or state is _State.CLOSING:
            self._handle_frames(data)
        elif state is _State.HANDSHAKE:
            self._read_handshake(data)
        elif state is _State.CONNECTING:
            self._hold_early_data(data)

    def pause_writing(self) -> None:
        """The transport's buffer is full: senders wait on a future made now, not kept otherwise."""
        if self._drain_waiter is None:
            self._drain_waiter = self._loop.create_future()

    def resume_writing(self) -> None:
        self._release_writers()

    def shutdown(self) -> None:
        """Server exit: close open sockets with 1012 (service restart), refuse pending handshakes."""
        state = self._state
        if state is _State.OPEN:
            self._transport.write(close_frame(CLOSE_SERVICE_RESTART))
            self._set_disconnect(CLOSE_SERVICE_RESTART, "")
        elif state is _State.CONNECTING:
            self._transport.write(self._error_response(500, "Internal Server Error"))
        self._close_transport()

    # --- ASGI: receive and send ------------------------------------------------------------

    async def receive(self) -> Message:
        """The next message for the app; once disconnected, the disconnect message every time."""
        while True:
            message = self._take_message()
            if message is not None:
                return message
            waiter = self._receive_waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._receive_waiter = None

    async def send(self, message: Message) -> None:
        """Carry out one ASGI send; ClientDisconnected (an OSError) once the socket is closing or closed."""
        while (drain_waiter := self._drain_waiter) is not None:
            await asyncio.shield(drain_waiter)
        state = self._state
        if self._transport.is_closing():  # e.g. the peer's EOF: connection_lost is on its way
            raise ClientDisconnected()
        if state is _State.OPEN:
            self._send_while_open(message)
        elif state is _State.CONNECTING:
            self._answer_handshake(message)
        else:
            raise ClientDisconnected()

    def _answer_handshake(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            self._accept(message)
        elif kind == "websocket.close":
            self._refuse()
        else:
            raise RuntimeError(f"Expected ASGI message 'websocket.accept' or 'websocket.close', but got '{kind}'.")

    def _send_while_open(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            data = message.get("bytes")
            text = message.get("text")
            if data is not None:
                self._transport.write(binary_frame(data))
            elif text is not None:
                self._transport.write(text_frame(text))
        elif kind == "websocket.close":
            code = message.get("code")
            self._start_closing(CLOSE_NORMAL if code is None else code, message.get("reason") or "")
        else:
            raise RuntimeError(f"Expected ASGI message 'websocket.send' or 'websocket.close', but got '{kind}'.")

    # --- The handshake ----------------------------------------------------------------------

    def _read_handshake(self, data: bytes) -> None:
        """Buffer the upgrade request until its head is complete, then validate it and start the app."""
        buffered = data if self._pending is None else self._pending + data
        try:
            head_and_rest = split_request_head(buffered)
            if head_and_rest is None:
                self._pending = buffered
                return
            head, rest = head_and_rest
            request = parse_request_head(head)
            accept_key = check_handshake(request)
            scope = self._build_scope(request)
        except HandshakeError as error:
            self._pending = None
            body = f"Failed to open a WebSocket connection: {error.message}.\n"
            self._transport.write(self._error_response(error.status, body, error.headers))
            self._close_transport()
            return
        self._pending = rest or None
        self._accept_key = accept_key
        self._start_app(scope)

    def _build_scope(self, request: HandshakeRequest) -> Message:
        """The websocket scope, as uvicorn builds it (minus the websocket.http.response extension)."""
        config = self._config
        transport = self._transport
        raw_path, _, query_string = request.target.partition(b"?")
        try:
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            raise HandshakeError(400, "Invalid request target") from None
        root_path: str = config.root_path
        return {
            "type": "websocket",
            "asgi": {"version": config.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "scheme": "wss" if is_ssl(transport) else "ws",
            "server": get_local_addr(transport),
            "client": get_remote_addr(transport),
            "root_path": root_path,
            "path": root_path + unquote(path),
            "raw_path": root_path.encode("ascii") + raw_path,
            "query_string": query_string,
            "headers": request.headers,
            "subprotocols": header_tokens(request.headers, b"sec-websocket-protocol"),
            "state": self._app_state.copy(),
            "extensions": {},
        }

    def _start_app(self, scope: Message) -> None:
        self._scope = scope
        self._state = _State.CONNECTING
        self._inbox = [{"type": "websocket.connect"}]
        task = self._loop.create_task(self._run_app())
        tasks = self._server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _hold_early_data(self, data: bytes) -> None:
        """Keep what a client sends before the app accepts; stop reading past 64 KiB of it."""
        self._pending = data if self._pending is None else self._pending + data
        if len(self._pending) > MAX_HANDSHAKE_SIZE:
            self._pause_reading()

    def _accept(self, message: Message) -> None:
        """Send the 101 response; from now on frames flow and keepalive pings go out."""
        scope, accept_key = self._scope, self._accept_key
        assert scope is not None and accept_key is not None
        headers = [*self._server_state.default_headers, *(message.get("headers") or ())]
        response = accept_response(accept_key, subprotocol=message.get("subprotocol"), headers=headers)
        if logger.isEnabledFor(logging.INFO):
            logger.info('%s - "WebSocket %s" [accepted]', get_client_addr(scope), get_path_with_query_string(scope))  # type: ignore[arg-type]
        self._scope = self._accept_key = None
        self._transport.write(response)
        self._state = _State.OPEN
        self._parser = FrameParser(self._config.ws_max_size)
        self._schedule_ping()
        early_data, self._pending = self._pending, None
        self._resume_reading()
        if early_data:
            self._handle_frames(early_data)

    def _refuse(self) -> None:
        """``websocket.close`` before accept: HTTP 403, and the app's next receive is disconnect 1006."""
        scope = self._scope
        assert scope is not None
        if logger.isEnabledFor(logging.INFO):
            logger.info('%s - "WebSocket %s" 403', get_client_addr(scope), get_path_with_query_string(scope))  # type: ignore[arg-type]
        self._scope = self._accept_key = None
        self._set_disconnect(CLOSE_ABNORMAL, "")
        self._transport.write(self._error_response(403))
        self._close_transport()

    def _error_response(self, status: int, body: str = "", headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
        return error_response(status, body, headers=[*headers, *self._server_state.default_headers])

    # --- The app's task ---------------------------------------------------------------------

    async def _run_app(self) -> None:
        """Run the app, then end the connection as its outcome asks (500, close 1011 or 1000).

        The scope is passed from its slot, not held in this frame: once the app
        has answered the handshake, whether the scope lives on is up to the app.
        """
        failed = False
        try:
            result = await self._config.loaded_app(self._scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except Exception:
            logger.exception("Exception in ASGI application\n")
            failed = True
        except BaseException:  # cancelled (shutdown grace period over): still end the connection
            self._end_connection(failed=True)
            raise
        else:
            if result is not None:
                logger.error("ASGI callable should return None, but returned '%s'.", result)
        self._end_connection(failed)

    def _end_connection(self, failed: bool) -> None:
        state = self._state
        if state is _State.CONNECTING:
            if not failed:
                logger.error("ASGI callable returned without completing handshake.")
            self._transport.write(self._error_response(500, "Internal Server Error"))
            self._close_transport()
        elif state is _State.OPEN:
            self._start_closing(CLOSE_INTERNAL_ERROR if failed else CLOSE_NORMAL, "")

    # --- Frames from the peer -----------------------------------------------------------------

    def _handle_frames(self, data: bytes) -> None:
        assert self._parser is not None
        for event in self._parser.feed(data):
            if self._state is _State.CLOSED:
                return
            match event:
                case TextMessage(text):
                    self._receive_message({"type": "websocket.receive", "text": text})
                case BinaryMessage(payload):
                    self._receive_message({"type": "websocket.receive", "bytes": payload})
                case Ping(payload):
                    if self._state is _State.OPEN:
                        self._transport.write(pong_frame(payload))
                case Pong(payload):
                    self._on_pong(payload)
                case Close(code, reason):
                    self._on_close(code, reason)
                case ProtocolViolation(code, reason):
                    self._fail(code, reason)

    def _receive_message(self, message: Message) -> None:
        """Queue a message for the app; past ws_max_queue waiting, stop reading the socket."""
        if self._state is not _State.OPEN:
            return  # the app has closed: drop data while waiting for the peer's close frame
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = []
        inbox.append(message)
        if len(inbox) > self._config.ws_max_queue:
            self._pause_reading()
        self._wake_receiver()

    def _on_close(self, code: int | None, reason: str) -> None:
        """The peer's close frame: echo it (unless it answers ours), report disconnect, close."""
        if self._state is _State.OPEN:
            self._transport.write(close_frame(code))
            self._set_disconnect(CLOSE_NO_STATUS if code is None else code, reason)
        self._close_transport()

    def _fail(self, code: int, reason: str) -> None:
        """Close at once with ``code``: the peer broke the protocol (1002, 1007, 1009) or stopped answering pings (1011)."""
        if self._state is _State.OPEN:
            self._transport.write(close_frame(code, reason))
            self._set_disconnect(code, reason)
        self._close_transport()

    # --- Keepalive ----------------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        interval = self._config.ws_ping_interval
        if interval:
            self._timer = self._loop.call_later(interval, self._send_keepalive_ping)

    def _send_keepalive_ping(self) -> None:
        """Ping; with a ping timeout, the timer now waits for the pong, else for the next ping."""
        self._timer = None
        if self._state is not _State.OPEN:
            return
        payload = os.urandom(4)  # tells our pong from stale or unsolicited ones
        self._transport.write(ping_frame(payload))
        timeout = self._config.ws_ping_timeout
        if timeout:
            self._ping_payload = payload
            self._timer = self._loop.call_later(timeout, self._on_keepalive_timeout)
        else:
            self._schedule_ping()

    def _on_pong(self, payload: bytes) -> None:
        if self._ping_payload is None or payload != self._ping_payload:
            return
        self._ping_payload = None
        self._cancel_timer()
        self._schedule_ping()

    def _on_keepalive_timeout(self) -> None:
        self._timer = None
        self._ping_payload = None
        if self._state is _State.OPEN:
            self._fail(CLOSE_INTERNAL_ERROR, KEEPALIVE_TIMEOUT_REASON)

    # --- Closing --------------------------------------------------------------------------------

    def _start_closing(self, code: int, reason: str) -> None:
        """Send our close frame; the transport closes on the peer's reply or after CLOSE_TIMEOUT."""
        frame = close_frame(code, reason)  # ValueError for a code that may not be sent, before any change
        self._transport.write(frame)
        self._set_disconnect(code, reason)
        self._state = _State.CLOSING
        self._cancel_timer()
        self._ping_payload = None
        self._resume_reading()  # the peer's close frame must get through even if the app stopped reading
        self._timer = self._loop.call_later(CLOSE_TIMEOUT, self._close_transport)

    def _close_transport(self) -> None:
        self._cancel_timer()
        self._ping_payload = None
        self._state = _State.CLOSED
        self._transport.close()

    def _set_disconnect(self, code: int, reason: str) -> None:
        """Record how the socket ended; the first cause wins."""
        if self._disconnect is None:
            self._disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._wake_receiver()

    # --- Small helpers ----------------------------------------------------------------------------

    def _take_message(self) -> Message | None:
        """The oldest waiting message, else the disconnect message, else None; resumes reading when drained."""
        inbox = self._inbox
        if not inbox:
            return self._disconnect
        message = inbox.pop(0)
        if not inbox:
            self._inbox = None
        if self._reading_paused and self._state is _State.OPEN and len(inbox) <= self._config.ws_max_queue // 4:
            self._resume_reading()
        return message

    def _wake_receiver(self) -> None:
        waiter = self._receive_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _release_writers(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pause_reading(self) -> None:
        if not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
