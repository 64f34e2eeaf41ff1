"""Websocket details of the GraphQL endpoint: a short route in, text frames, closing a socket when its token expires."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from graphql import GraphQLError
from starlette.authentication import AuthenticationBackend, AuthenticationError
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from starlette.websockets import WebSocketDisconnected as StarletteWebSocketDisconnected
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.async_base_view import AsyncBaseHTTPView
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived
from strawberry.subscriptions import GRAPHQL_WS_PROTOCOL

from graph.document_cost import document_too_long
from graph.errors import with_request_id
from graph.schema import MAX_DOCUMENT_CHARS
from server.request_errors import SERVICE_UNAVAILABLE, error_body
from server.socket_messages import (
    INVALID_MESSAGE_CODE,
    LEGACY_WS,
    TRANSPORT_WS,
    MalformedMessage,
    SocketProtocol,
    check_message,
    operation_query,
)
from server.uvicorn_logs import HANDSHAKE_DENIED

logger = logging.getLogger(__name__)

# Key in the websocket's ASGI scope: the expiry timer to cancel when the socket ends first.
SOCKET_EXPIRY = "portraits.expiry"
# 4403 Forbidden, as a refused connection_init: graphql-ws (the client) treats 4401 as fatal and ends every
# subscription, but retries after 4403, reading connectionParams again, so a client that refreshes its token
# (Supabase's last an hour) reconnects and resubscribes by itself.
TOKEN_EXPIRED_CODE = 4403
TOKEN_EXPIRED_REASON = "Forbidden: token expired"
# Key in the websocket's ASGI scope: the (code, reason) to close with instead of strawberry's refusal (4403).
SOCKET_REFUSAL = "portraits.refusal"
# Key in the websocket's ASGI scope: the user whose websocket count this socket holds.
SOCKET_USER = "portraits.user"
# A websocket over a per-user or per-address cap: 4000 + HTTP's 429, as graphql-transport-ws numbers its codes.
TOO_MANY_SOCKETS_CODE = 4429
SOCKET_PROTOCOLS = ("graphql-transport-ws", "graphql-ws")
# An upgrade from an origin not allowed (server/cors.py) is answered HTTP 403 with the reason, through the ASGI
# websocket.http.response extension (uvicorn's); a server without it gets the socket accepted, then closed with
# 4000 + HTTP's 403 and the reason.
ORIGIN_REFUSED_STATUS = 403
ORIGIN_REFUSED_CODE = 4403
DENIAL_EXTENSION = "websocket.http.response"
# Key in the websocket's ASGI scope: the process's LiveSockets, which the socket's adapter joins once accepted.
LIVE_SOCKETS = "portraits.live_sockets"
# RFC 6455: 1012 Service Restart, the code uvicorn also closes with on shutdown; clients reconnect.
SERVICE_RESTART_CODE = 1012
SHUTDOWN_REASON = "Server shutting down; reconnect"
SHUTDOWN_MESSAGE = "The server is shutting down; subscribe again once reconnected."
# Server messages after which an operation is over, in both protocols.
ENDING_MESSAGES = frozenset({"complete", "error"})
# RFC 6455, 5.5: a control frame's payload is at most 125 bytes, two of them the close code.
MAX_CLOSE_REASON_BYTES = 123
ELLIPSIS = "..."

_closing: set[asyncio.Task[None]] = set()


@dataclass
class SocketTally:
    """GraphQL sockets opened and closed so far: the GC pacer collects the cycles closed ones leave (gc_pacer.py)."""

    opened: int = 0
    closed: int = 0


# This process's (``serve`` runs one app per process).
SOCKETS = SocketTally()


@dataclass
class SocketCounts:
    """Open websockets per key (a user, a client address) under a cap.

    Exact under concurrency: a check and its count happen in one step of the
    event loop, with no await between; each ``take`` that succeeded is paired
    with one ``give_back`` in a ``finally``.
    """

    limit: int
    counts: dict[Hashable, int] = field(default_factory=dict)

    def take(self, key: Hashable) -> bool:
        held = self.counts.get(key, 0)
        if held >= self.limit:
            return False
        self.counts[key] = held + 1
        return True

    def give_back(self, key: Hashable) -> None:
        held = self.counts[key] - 1
        if held:
            self.counts[key] = held
        else:
            del self.counts[key]


def too_many_sockets(whose: str, limit: int) -> str:
    """The close reason of a socket over a cap (at most 123 bytes, as close reasons must be)."""
    return f"Too many websockets for this {whose} (limit {limit})"


class GraphQLSocketShortcut:
    """Hands websockets on the GraphQL path straight to the GraphQL view; everything else to the Starlette app.

    An ASGI call stays on the stack for as long as its websocket lives, and
    Starlette's error and exception middleware, router, route and
    authentication middleware each keep a coroutine frame there: about 4 KB
    per idle subscriber (bench/subscriptions.py). A socket needs only the
    upgrade header's bearer-token check, done here as the middleware does it:
    a bad token refuses the upgrade (HTTP 403), a good one sets the scope's
    ``user`` and ``auth``. Before anything, ``origin_refusal`` (server/cors.py) may refuse the
    upgrade for its ``Origin``.
    """

    def __init__(
        self,
        app: ASGIApp,
        graphql: ASGIApp,
        *,
        path: str,
        backend: AuthenticationBackend,
        per_address: SocketCounts,
        live: LiveSockets,
        tally: SocketTally = SOCKETS,
        origin_refusal: Callable[[Scope], str | None] | None = None,
    ) -> None:
        self.app = app
        self.origin_refusal = origin_refusal
        self.graphql = graphql
        self.path = path
        self.backend = backend
        self.per_address = per_address
        self.live = live
        self.tally = tally

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function: every HTTP request passes through, and pays no coroutine of ours for it.
        if scope["type"] != "websocket" or _route_path(scope) != self.path:
            return self.app(scope, receive, send)
        return self.socket(scope, receive, send)

    async def socket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A GraphQL websocket past Starlette: its origin, the per-address cap and the upgrade's token checked here."""
        if self.origin_refusal is not None and (reason := self.origin_refusal(scope)) is not None:
            await refuse_origin(scope, receive, send, reason)
            return
        client = scope.get("client")
        address = client[0] if client else ""  # the peer, or X-Forwarded-For's from a trusted proxy (uvicorn's)
        if not self.per_address.take(address):
            await refuse_socket(scope, receive, send, too_many_sockets("address", self.per_address.limit))
            return
        try:
            try:
                credentials = await self.backend.authenticate(HTTPConnection(scope))
            except AuthenticationError:
                await send({"type": "websocket.close", "code": 1008})  # before accept: the server answers HTTP 403
                return
            if credentials is not None:
                scope["auth"], scope["user"] = credentials
            scope[LIVE_SOCKETS] = self.live
            channel = SocketChannel(receive, send)
            self.tally.opened += 1
            try:
                await self.graphql(scope, channel.receive, channel.send)
            finally:
                channel.cut()
                self.tally.closed += 1
        finally:
            self.per_address.give_back(address)


async def refuse_socket(
    scope: Scope, receive: Receive, send: Send, reason: str, code: int = TOO_MANY_SOCKETS_CODE
) -> None:
    """Accept, then close with ``code`` (4429) and ``reason``: a browser's WebSocket sees them (not an HTTP status).

    The client's subprotocol is echoed so that it accepts the handshake and reads the close.
    """
    await receive()  # websocket.connect
    offered = [protocol for protocol in scope.get("subprotocols", []) if protocol in SOCKET_PROTOCOLS]
    await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
    await send({"type": "websocket.close", "code": code, "reason": reason})


async def refuse_origin(scope: Scope, receive: Receive, send: Send, reason: str) -> None:
    """Refuse an upgrade from a disallowed origin: HTTP 403 with a FORBIDDEN error body where the server can."""
    if DENIAL_EXTENSION not in (scope.get("extensions") or {}):
        await refuse_socket(scope, receive, send, reason, code=ORIGIN_REFUSED_CODE)
        return
    body = error_body(reason, "FORBIDDEN")
    response = Response(body, status_code=ORIGIN_REFUSED_STATUS, media_type="application/json")
    await WebSocket(scope, receive, send).send_denial_response(response)
    HANDSHAKE_DENIED.set(True)  # uvicorn's false "without completing handshake" error is dropped (uvicorn_logs.py)


class SocketChannel:
    """The socket's ``receive`` and ``send`` as the GraphQL view sees them, cut from uvicorn's connection after.

    graphql-core's executor of a subscription lies on a reference cycle (its
    ``__dict__`` holds its own bound methods), so when the socket ends it is
    freed only by a full garbage collection, and with it everything it
    reaches: our context, the Starlette WebSocket, and through the
    WebSocket's ``receive``/``send`` uvicorn's whole connection (protocol,
    transport, handshake headers): ~80 objects a closed socket
    (bench/socket_cycles.py). Cut here, that connection is freed by reference
    counting as soon as it closes; ~36 objects (~5 KB) wait for the collector.
    """

    __slots__ = ("_app_closed", "_receive", "_send")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive: Receive | None = receive
        self._send: Send | None = send
        self._app_closed = False  # the app has sent websocket.close

    # Plain functions returning awaitables: no frame of ours waits while the socket idles (it waits in receive).
    def receive(self) -> Awaitable[Message]:
        return _ended_receive() if self._receive is None else self._receive()

    def send(self, message: Message) -> Awaitable[None]:
        if self._send is None:
            return _ended_send(message)
        app_closed = self._app_closed
        self._app_closed = app_closed or message["type"] == "websocket.close"
        return _send_unless_closed_by_server(self._send, message, app_closed=app_closed)

    def cut(self) -> None:
        self._receive = self._send = None


async def _ended_receive() -> Message:
    return {"type": "websocket.disconnect", "code": 1006}


async def _ended_send(message: Message) -> None:
    raise OSError("the websocket has ended")  # as uvicorn does for a closed connection


async def _send_unless_closed_by_server(send: Send, message: Message, *, app_closed: bool) -> None:
    """``send``, with uvicorn's refusal after a close it sent itself made the OSError of an ended socket.

    uvicorn closes a socket on its own for a client's protocol error (1007 for a text frame that is not UTF-8, 1009
    for one over the size limit, both possibly read in the same TCP segment as the message the app is answering),
    and then refuses the app's next send or close with a RuntimeError, which Starlette passes on and uvicorn logs as
    a crash. For the app that socket has simply ended (Starlette turns an OSError into WebSocketDisconnect).
    """
    try:
        await send(message)
    except RuntimeError as error:
        if app_closed or message["type"] not in ("websocket.send", "websocket.close"):
            raise  # a mistake of ours, not the client's
        raise OSError("the server closed the websocket for a protocol error of the client's") from error


def _route_path(scope: Scope) -> str:
    """The path below the app's root_path, as Starlette's router matches it."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    return path[len(root_path):] if root_path and path.startswith(root_path) else path


class LiveSockets:
    """This app's accepted GraphQL websockets, so that a server shutting down can end them in order.

    uvicorn's own shutdown closes every socket with 1012 at once, cutting the
    subscriptions on it without a word. ``end_all`` first sends each open
    operation the protocol's error message (``SERVICE_UNAVAILABLE``), then
    closes with 1012, socket by socket on the socket's own send path, so the
    message always comes before the close. A socket accepted after that
    begins is ended as soon as it joins.
    """

    def __init__(self) -> None:
        # Weak: a socket whose reader was never closed (its generator waiting for the collector) is not kept here.
        self.sockets: weakref.WeakSet[TextWebSocketAdapter] = weakref.WeakSet()
        self.ending = False
        self._late: set[asyncio.Task[None]] = set()

    def join(self, socket: TextWebSocketAdapter) -> None:
        self.sockets.add(socket)
        if self.ending:
            task = asyncio.get_running_loop().create_task(socket.end_for_shutdown())
            self._late.add(task)
            task.add_done_callback(self._late.discard)

    def leave(self, socket: TextWebSocketAdapter) -> None:
        self.sockets.discard(socket)

    async def end_all(self) -> None:
        """Every open operation gets SERVICE_UNAVAILABLE, then every socket closes with 1012."""
        self.ending = True
        ending = [socket.end_for_shutdown() for socket in list(self.sockets)]
        if ending:
            logger.info("shutting down: ending %d websocket(s) with 1012", len(ending))
            await asyncio.gather(*ending)


class TextWebSocketAdapter(ASGIWebSocketAdapter):
    """Checks every client message before strawberry reads it, and sends every message as a text frame.

    A malformed message (server/socket_messages.py) closes the socket with
    4400 and the reason; JSON that does not decode, nested past the decoder's
    recursion limit included, is strawberry's "must be valid JSON" (4400).
    Replies go as text frames, as graphql-ws and Apollo clients require (our
    encoder makes bytes). It keeps the ids of the operations it has started
    and not yet seen end, for ``end_for_shutdown``.
    """

    def __init__(self, view: AsyncBaseHTTPView, request: WebSocket, response: WebSocket) -> None:  # type: ignore[type-arg]
        super().__init__(view, request, response)
        self.operations: set[str] = set()
        self.legacy = False
        self.ending = False  # shutting down: strawberry's own messages are dropped from now on

    async def iter_json(self, *, ignore_parsing_errors: bool = False) -> AsyncGenerator[object, None]:
        self.legacy = legacy = await self.view.pick_websocket_subprotocol(self.ws) == GRAPHQL_WS_PROTOCOL
        protocol = LEGACY_WS if legacy else TRANSPORT_WS
        live: LiveSockets | None = self.ws.scope.get(LIVE_SOCKETS)
        if live is not None:
            live.join(self)
        try:
            async for message in self._checked_messages(protocol, ignore_parsing_errors=ignore_parsing_errors):
                yield message
        finally:
            if live is not None:
                live.leave(self)

    async def _checked_messages(
        self, protocol: SocketProtocol, *, ignore_parsing_errors: bool
    ) -> AsyncGenerator[Mapping[str, object], None]:
        legacy = protocol is LEGACY_WS
        while self.ws.application_state != WebSocketState.DISCONNECTED:
            try:
                text = await self.ws.receive_text()
            except KeyError as error:  # a binary frame: Starlette's message has "bytes", not "text"
                raise NonTextMessageReceived from error
            except WebSocketDisconnect:
                return
            try:
                decoded = self.view.decode_json(text)
            except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
                if ignore_parsing_errors:
                    continue
                raise NonJsonMessageReceived from error
            try:
                message = check_message(decoded, protocol)
            except MalformedMessage as error:
                await self.close(INVALID_MESSAGE_CODE, f"Invalid message: {error}")
                return
            if (refusal := _query_too_long(message, protocol)) is not None or (
                (query := operation_query(message, protocol)) is not None
                and (refusal := await self.refuse_operation(query)) is not None
            ):
                await self.send_json(_operation_error(message, refusal, legacy=legacy))
                continue
            if self.ending:
                continue  # closing for shutdown: nothing new starts
            if message["type"] == protocol.start:
                if (refusal := self._over_operation_cap(str(message["id"]))) is not None:
                    await self.send_json(_operation_error(message, refusal, legacy=legacy))
                    continue
                self.operations.add(str(message["id"]))
            elif message["type"] == protocol.stop:
                self.operations.discard(str(message["id"]))
            yield message

    async def refuse_operation(self, query: str) -> GraphQLError | None:
        """The error for an operation this server will not start (a subclass's policy); None starts it."""
        return None

    def _over_operation_cap(self, operation_id: str) -> GraphQLError | None:
        """RATE_LIMITED for an operation past the view's ``max_subscriptions_per_connection`` running at once.

        strawberry applies the same cap, but answers it with a bare "Subscription limit reached" that has no
        ``extensions.code``; refused here first, the client gets the code and the limit. (An id already running
        is left to strawberry, which closes the socket with 4409.)
        """
        limit = self.view.max_subscriptions_per_connection
        if limit is None or operation_id in self.operations or len(self.operations) < limit:
            return None
        return GraphQLError(
            f"Too many operations at once on this websocket (limit {limit}): complete one before starting another",
            extensions={"code": "RATE_LIMITED", "limit": limit},
        )

    async def send_json(self, message: Mapping[str, object]) -> None:
        """Send ``message``; to a socket already gone, drop it quietly.

        strawberry's operation tasks log whatever a send raises as "Exception
        in worker task", so a client closing while its subscriptions' events
        were in flight read as crashes. Dropping is safe: the socket's handler
        reads the disconnect from ``iter_json`` and then ends (cancels) every
        operation of the socket; nothing strawberry runs loops on sends alone
        (the graphql-ws keep-alive sleeps between its sends).
        """
        if self.ws.application_state == WebSocketState.DISCONNECTED or self.ending:
            logger.debug("message dropped: the websocket has closed")
            return
        if message.get("type") in ENDING_MESSAGES:
            self.operations.discard(str(message.get("id")))
        await self._send(message)

    async def _send(self, message: Mapping[str, object]) -> None:
        encoded = self.view.encode_json(message)
        try:
            await self.ws.send_text(encoded.decode() if isinstance(encoded, bytes) else encoded)
        except (WebSocketDisconnect, StarletteWebSocketDisconnected) as error:  # gone mid-send; closed by us before
            logger.debug("message dropped: the websocket has closed (%r)", error)

    async def end_for_shutdown(self) -> None:
        """Each open operation gets the protocol's error message, SERVICE_UNAVAILABLE; then close with 1012.

        From here on strawberry's own messages are dropped, so nothing of an
        operation follows its error; the client's close reply then ends the
        socket's handler and its operations, as any close does.
        """
        if self.ending:
            return
        self.ending = True
        error = GraphQLError(SHUTDOWN_MESSAGE, extensions={"code": SERVICE_UNAVAILABLE})
        for operation_id in sorted(self.operations):
            if self.ws.application_state == WebSocketState.DISCONNECTED:
                return
            await self._send(_operation_error({"id": operation_id}, error, legacy=self.legacy))
        self.operations.clear()
        if self.ws.application_state != WebSocketState.DISCONNECTED:
            with contextlib.suppress(WebSocketDisconnect, StarletteWebSocketDisconnected, RuntimeError, OSError):
                await self.ws.close(SERVICE_RESTART_CODE, SHUTDOWN_REASON)

    async def close(self, code: int, reason: str) -> None:
        """Close with the code and reason ``on_ws_connect`` chose for its refusal, if any, instead of strawberry's."""
        refusal = self.ws.scope.pop(SOCKET_REFUSAL, None)
        if refusal is not None:
            code, reason = refusal
        with contextlib.suppress(WebSocketDisconnect):  # the socket has ended already: there is nothing to close
            await super().close(code, close_reason(reason))


def close_reason(reason: str) -> str:
    """``reason`` cut to what a close frame carries, on a character boundary.

    Strawberry's reasons may quote the client (an unknown message type, an operation id, a syntax error), and a
    longer reason made the frame unsendable: the connection was dropped without a close code.
    """
    encoded = reason.encode("utf-8", "replace")
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return reason
    return encoded[: MAX_CLOSE_REASON_BYTES - len(ELLIPSIS)].decode("utf-8", "ignore") + ELLIPSIS  # (ASCII)


def _query_too_long(message: Mapping[str, object], protocol: SocketProtocol) -> GraphQLError | None:
    """An operation's document over the limit, refused before strawberry lexes it (16 MB took 1.6 s of CPU)."""
    query = operation_query(message, protocol)
    return None if query is None else document_too_long(query, MAX_DOCUMENT_CHARS)


def _operation_error(message: Mapping[str, object], error: GraphQLError, *, legacy: bool) -> dict[str, object]:
    """The protocol's error message for one operation: a list of errors, or (graphql-ws) one error."""
    formatted = with_request_id(error).formatted  # the socket's id, as the schema's errors carry it
    return {"id": message["id"], "type": "error", "payload": formatted if legacy else [formatted]}


def close_at_expiry(websocket: WebSocket, expires_at: datetime) -> asyncio.TimerHandle:
    """Close the socket (4403) when its token expires; cancel the handle when the socket ends first."""
    loop = asyncio.get_running_loop()
    delay = max(0.0, (expires_at - datetime.now(UTC)).total_seconds())
    return loop.call_later(delay, _start_closing, websocket)


def _start_closing(websocket: WebSocket) -> None:
    task = asyncio.get_running_loop().create_task(_close(websocket))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def _close(websocket: WebSocket) -> None:
    try:
        await websocket.close(code=TOKEN_EXPIRED_CODE, reason=TOKEN_EXPIRED_REASON)
    except (RuntimeError, OSError) as error:  # already closed or closing
        logger.debug("socket closed before its token expired: %s", error)
