"""Connection-level limits uvicorn lacks: a per-process cap, header deadlines, and websocket peers that will not read.

uvicorn 0.54 never times out a connection that sends no request or drips its
headers (its keep-alive timer starts only after a response), answers
``limit_concurrency`` only once a request has been parsed (so idle sockets
are not bounded), and its websocket protocol writes a pong for every ping
without looking at its write buffer. uvicorn takes protocol classes for
``http=`` and ``ws=``; the classes here wrap uvicorn's own (the ones
``"auto"`` picks) by delegation, so its HTTP parsing, flow control and
websocket handling stay uvicorn's.

- Over ``max_connections`` open connections, a new one is answered a JSON
  503 and closed without ever reaching uvicorn.
- A connection must complete each request's headers within
  ``header_timeout`` of opening or of its first byte after the previous
  response; uvicorn's keep-alive timeout closes it when idle in between, and
  a backstop aborts one that still holds unread output after both.
- A websocket peer that keeps sending while more than ``ws_max_unread_bytes``
  of replies it does not read (pongs) pile up in its write buffer is aborted.

Request boundaries come from the app, not from parsing HTTP again: the
connection's wrapper is set in a context variable while uvicorn handles its
bytes, uvicorn creates the request's ASGI task there (the task inherits the
variable), and ``RequestClock``, the outermost ASGI middleware, reports when
a request starts and when its response is finished.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import weakref
from collections.abc import Awaitable
from contextvars import ContextVar
from http import HTTPStatus
from typing import Any, ClassVar, cast

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.request_errors import SERVICE_UNAVAILABLE, error_body, raw_response
from server.settings import ConnectionLimits
from server.uvicorn_protocols import WebSocketsSansIOProtocol

logger = logging.getLogger(__name__)

# Descriptors kept for everything but client connections: the database pool and its LISTEN connection, Redis,
# object files, logs, the listening socket.
RESERVED_DESCRIPTORS = 256
# A refused connection is kept (its request read and dropped) this long after its 503, so the client reads the
# answer instead of a reset; at most this many at once, beyond which they are dropped without one.
REFUSAL_LINGER_SECONDS = 2.0
MAX_LINGERING_REFUSALS = 128

# The HTTP connection whose bytes uvicorn is handling (a weak reference: tasks the app starts inherit it).
_CURRENT: ContextVar[weakref.ref[GuardedHttpProtocol] | None] = ContextVar("portraits_connection", default=None)


def raise_descriptor_limit(max_connections: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit toward the hard one; the connections that fit, warning when fewer."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + RESERVED_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as error:
            logger.warning("could not raise the open-file limit from %d to %d: %s", soft, target, error)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return max_connections
    fits = max(1, soft - RESERVED_DESCRIPTORS)
    logger.warning(
        "MAX_CONNECTIONS=%d needs %d file descriptors but RLIMIT_NOFILE allows %d (hard limit %s): "
        "serving at most %d connections; raise the limit (ulimit -n, LimitNOFILE=, docker --ulimit) or lower "
        "MAX_CONNECTIONS",
        max_connections, wanted, soft, "unlimited" if hard == resource.RLIM_INFINITY else hard, fits,
    )
    return fits


def busy_response(limit: int) -> bytes:
    """The whole HTTP 503 a connection over the cap gets: a GraphQL error, then the connection closes."""
    body = error_body(
        f"Server busy: too many open connections (limit {limit}); retry shortly", SERVICE_UNAVAILABLE, {"limit": limit}
    )
    return raw_response(HTTPStatus.SERVICE_UNAVAILABLE, body, [(b"retry-after", b"1")])


class ConnectionGuard:
    """This process's open connections against the limits; makes the protocol classes handed to uvicorn."""

    def __init__(
        self,
        limits: ConnectionLimits,
        *,
        max_connections: int | None = None,
        http: type[asyncio.Protocol],
    ) -> None:
        self.limits = limits
        self.inner_http = http  # the uvicorn HTTP protocol admitted connections get
        self.max_connections = limits.max_connections if max_connections is None else max_connections
        self.open = 0
        self.lingering = 0
        self.refused = 0
        self.busy = busy_response(self.max_connections)

    @classmethod
    def for_process(
        cls, limits: ConnectionLimits, *, http: type[asyncio.Protocol]
    ) -> ConnectionGuard:
        """A guard whose cap fits the descriptors this process may open (raising its soft limit first)."""
        return cls(limits, max_connections=raise_descriptor_limit(limits.max_connections), http=http)

    @property
    def http_protocol(self) -> type[asyncio.Protocol]:
        """For ``uvicorn.Config(http=...)``."""
        return type("GuardedHttp", (GuardedHttpProtocol,), {"guard": self, "__slots__": ()})

    @property
    def ws_protocol(self) -> type[asyncio.Protocol]:
        """For ``uvicorn.Config(ws=...)``."""
        return type("GuardedWebSocket", (GuardedWebSocketProtocol,), {"guard": self, "__slots__": ()})

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """The app with the middleware that tells connections where their requests begin and end."""
        return RequestClock(app)

    def take(self) -> Slot | None:
        if self.open >= self.max_connections:
            self.refused += 1
            return None
        self.open += 1
        return Slot(self)


class Slot:
    """One connection's place under the cap; released once, by whichever protocol holds the connection last."""

    __slots__ = ("guard",)

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard: ConnectionGuard | None = guard

    def release(self) -> None:
        if self.guard is not None:
            self.guard.open -= 1
            self.guard = None


class GuardedHttpProtocol(asyncio.Protocol):
    """uvicorn's HTTP protocol behind the connection cap and the header deadline."""

    guard: ClassVar[ConnectionGuard]
    __slots__ = (
        "__weakref__", "idle", "in_flight", "inner", "kwargs", "lingering", "slot", "this", "timer", "transport"
    )

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs: dict[str, Any] | None = kwargs  # uvicorn's (config, server_state, app_state, _loop)
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.slot: Slot | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.in_flight = 0
        self.idle = False
        self.lingering = False
        self.this = weakref.ref(self)

    # asyncio.Protocol, delegated to uvicorn's protocol once the connection is admitted.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio subclass
        self.slot = self.guard.take()
        if self.slot is None:
            self.refuse()
            return
        assert self.kwargs is not None
        self.inner = self.guard.inner_http(**self.kwargs)
        self.kwargs = None
        self.inner.connection_made(transport)
        self.arm(self.guard.limits.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return  # refused: the request is read and dropped
        if self.idle:  # the first byte of the next request starts its header deadline
            self.idle = False
            self.arm(self.guard.limits.header_timeout)
        token = _CURRENT.set(self.this)
        try:
            self.inner.data_received(data)
        finally:
            _CURRENT.reset(token)
        if self.transport is not None and self.transport.get_protocol() is not self:
            self.disarm()  # upgraded: the websocket protocol holds the connection (and its slot) now

    def eof_received(self) -> bool | None:
        return None if self.inner is None else self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        if self.slot is not None:
            self.slot.release()
            self.slot = None
        if self.lingering:
            self.guard.lingering -= 1
            self.lingering = False
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # What RequestClock and the websocket protocol tell us.

    def request_started(self) -> None:
        self.in_flight += 1
        self.idle = False
        self.disarm()

    def response_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self.transport is not None and not self.transport.is_closing():
            # uvicorn's keep-alive timer closes an idle connection; this backstop aborts one that would not close
            # (a peer that never reads what we wrote) or that drips bytes to keep uvicorn's timer off.
            self.idle = True
            self.arm(self.guard.limits.keep_alive_timeout + self.guard.limits.header_timeout)

    def hand_over(self) -> Slot | None:
        """The connection's slot, taken by the websocket protocol it is upgraded to."""
        slot, self.slot = self.slot, None
        return slot

    # Inside.

    def refuse(self) -> None:
        assert self.transport is not None
        self.transport.write(self.guard.busy)
        if self.guard.lingering >= MAX_LINGERING_REFUSALS or not self.transport.can_write_eof():
            self.transport.abort()
            return
        self.guard.lingering += 1
        self.lingering = True
        self.transport.write_eof()  # the client reads the 503, then our FIN; its request is read and dropped
        self.timer = asyncio.get_running_loop().call_later(REFUSAL_LINGER_SECONDS, self.transport.abort)

    def arm(self, delay: float) -> None:
        self.disarm()
        self.timer = asyncio.get_running_loop().call_later(delay, self.expire)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def expire(self) -> None:
        self.timer = None
        if self.transport is not None and self.in_flight == 0:
            self.transport.abort()  # nothing of ours is due: a slow header or an unread leftover


class GuardedWebSocketProtocol(asyncio.Protocol):
    """uvicorn's websocket protocol, aborting a peer that keeps sending while it leaves our writes unread.

    uvicorn answers each ping with a pong written straight to the transport,
    while the app's own sends wait for the transport to drain (uvicorn's flow
    control). So once writing is paused, the buffer grows only by such
    replies: a peer whose unread replies pile up past the cap, beyond what
    the buffer held when writing paused (which may be one large message of
    ours, slowly read), is flooding, and is aborted.
    """

    guard: ClassVar[ConnectionGuard]
    __slots__ = ("inner", "paused_at", "slot", "transport", "write_paused")  # one per open socket: kept small

    def __init__(self, **kwargs: Any) -> None:
        self.inner = WebSocketsSansIOProtocol(**kwargs)
        http = _CURRENT.get()
        connection = None if http is None else http()
        self.slot = None if connection is None else connection.hand_over()
        self.transport: asyncio.Transport | None = None
        self.write_paused = False
        self.paused_at = 0  # the write buffer's size when writing paused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if (
            transport is not None
            and self.write_paused
            and transport.get_write_buffer_size() - self.paused_at > self.guard.limits.ws_max_unread_bytes
        ):
            logger.info("websocket peer %s keeps sending but does not read: aborted", self.inner.client)
            transport.abort()
            return
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        self.inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.slot is not None:
            self.slot.release()
            self.slot = None
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.paused_at = 0 if self.transport is None else self.transport.get_write_buffer_size()
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.inner.resume_writing()


class RequestClock:
    """Outermost ASGI middleware: tells the HTTP connection when each request starts and its response is done."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function: a websocket's call, which lasts as long as the socket, keeps no frame of ours.
        reference = _CURRENT.get() if scope["type"] == "http" else None
        connection = None if reference is None else reference()
        if connection is None:
            return self.app(scope, receive, send)
        return self.timed(connection, scope, receive, send)

    async def timed(self, connection: GuardedHttpProtocol, scope: Scope, receive: Receive, send: Send) -> None:
        connection.request_started()
        finished = False

        async def send_and_note(message: Message) -> None:
            nonlocal finished
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False) and not finished:
                finished = True
                connection.response_finished()

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if not finished:
                connection.response_finished()
