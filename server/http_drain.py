"""Graceful shutdown for HTTP connections that are idle when it begins: a request already sent is still answered.

uvicorn's httptools protocol, told to shut down, closes at once a connection
with no request in progress. But such a connection may hold a request the
event loop has not read yet: bytes in the socket's receive buffer, sent
before the signal, read on the loop's next turn. Closing it then resets the
connection (unread data makes the kernel send RST), and the client gets no
answer at all. So an idle connection is kept ``IDLE_GRACE_SECONDS`` longer:
a request that arrives meanwhile is served and answered with
``Connection: close``; a connection still idle then is closed, as before.
A request in progress is finished and its connection closed (uvicorn's own
behaviour). One still running when uvicorn's graceful timeout
(``SHUTDOWN_GRACE_SECONDS``) cancels it gets, if nothing of its response was
sent yet, a JSON 503 ``SERVICE_UNAVAILABLE`` instead of uvicorn's plain-text
500 and its logged traceback (``AnswerCutRequests``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from http import HTTPStatus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.request_errors import SERVICE_UNAVAILABLE, error_body
from server.uvicorn_protocols import HttpToolsProtocol

logger = logging.getLogger(__name__)

# How long an idle connection may still bring a request once shutdown begins: requests sent before the signal
# are in the receive buffer or on their way (a loop turn, a network round trip), well within it.
IDLE_GRACE_SECONDS = 1.0


class DrainOnShutdown(HttpToolsProtocol):  # type: ignore[misc]  # uvicorn's class, looked up by name
    """uvicorn's httptools protocol, answering a request that reaches an idle connection as shutdown begins."""

    draining = False
    head_begun = False  # a request's first bytes have come, its head is not complete
    drain_timer: asyncio.TimerHandle | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_begun = True

    def on_headers_complete(self) -> None:
        self.head_begun = False
        super().on_headers_complete()
        if self.draining and self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # answered with Connection: close, then closed

    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.draining = True
            self.drain_timer = self.loop.call_later(IDLE_GRACE_SECONDS, self.close_if_idle)
        else:
            super().shutdown()  # the response in progress ends with Connection: close

    def close_if_idle(self) -> None:
        self.drain_timer = None
        if (self.cycle is None or self.cycle.response_complete) and not self.head_begun:
            self.transport.close()
        # A head under way is bounded by the connection guard's header deadline, the whole drain by uvicorn's
        # timeout_graceful_shutdown.

    def connection_lost(self, exc: Exception | None) -> None:
        if self.drain_timer is not None:
            self.drain_timer.cancel()
            self.drain_timer = None
        super().connection_lost(exc)


def drain_on_shutdown(protocol: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """For ``uvicorn.Config(http=...)``: ``protocol`` (an httptools protocol class) with the drain above."""
    return type(f"Draining{protocol.__name__}", (DrainOnShutdown, protocol), {})


SHUTDOWN_MESSAGE = "The server is shutting down and could not finish this request; retry"


class AnswerCutRequests:
    """ASGI middleware: an HTTP request cancelled by uvicorn's graceful-shutdown timeout is answered a JSON 503.

    uvicorn cancels the requests still running when ``timeout_graceful_shutdown``
    runs out (a body that never finishes arriving, say): it answers plain-text
    500 and logs the cancellation as a crash. Only uvicorn cancels a request's
    task, and only then, so a cancellation before any of the response was sent
    is answered here, and the task ends; after, uvicorn closes the connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function for websockets: a socket's call lasts as long as the socket and keeps no frame of ours.
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        return self.answered(scope, receive, send)

    async def answered(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        def noting_start(message: Message) -> Awaitable[None]:  # (plain: no coroutine of its own per message)
            nonlocal started
            started = started or message["type"] == "http.response.start"
            return send(message)

        try:
            await self.app(scope, receive, noting_start)
        except asyncio.CancelledError:
            if started:
                raise
            logger.info("shutting down: %s %s cut by the grace period, answered 503", scope["method"], scope["path"])
            await send_unavailable(send)


async def send_unavailable(send: Send) -> None:
    body = error_body(SHUTDOWN_MESSAGE, SERVICE_UNAVAILABLE)
    await send({
        "type": "http.response.start",
        "status": HTTPStatus.SERVICE_UNAVAILABLE,
        "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1"), (b"connection", b"close"),
        ],
    })
    await send({"type": "http.response.body", "body": body})
