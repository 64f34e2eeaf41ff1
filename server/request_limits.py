"""The query-string and body caps of every HTTP request, checked before any route runs.

uvicorn hands a request's body to the app in chunks as it arrives and holds
at most about 64 KB of it unread (its flow control pauses the socket). This
middleware reads those chunks, counting, and stops at the cap: an oversized
body is answered 413 (at once when its ``Content-Length`` says so) and the
connection closed, so the server never holds more than the cap of one
body. Under the cap the body is handed to the app in one piece, as every
route here reads bodies whole anyway (strawberry's view does).

Nothing else times a body (the connection guard's header deadline ends
where the request starts) or bounds what all bodies together hold: 50
connections dripping a byte every 5 s held every slot of a
``MAX_CONNECTIONS=50`` server, and 45 holding 2 MB each grew it by 78 MB,
for as long as they liked. So the whole body must arrive within
``body_timeout`` (else 408), and the bytes of bodies received and not yet
answered count against one budget per process, ``max_buffered_body_bytes``
(a body that would pass it is answered 503); both close the connection.
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.media_types import JSON, response_media_type
from server.request_errors import (
    PAYLOAD_TOO_LARGE,
    REQUEST_TIMEOUT,
    SERVICE_UNAVAILABLE,
    URI_TOO_LONG,
    RequestRefused,
    refusal_response,
)
from server.settings import HttpLimits

# The refusal is sent before the body is read: the connection cannot carry another request.
CLOSE = {"connection": "close"}


class RequestLimits:
    """Outermost ASGI middleware for HTTP: 414 over the query-string cap, 413 over the body cap, 408 for a body
    too slow, 503 over the process's budget of buffered body bytes."""

    def __init__(self, app: ASGIApp, limits: HttpLimits) -> None:
        self.app = app
        self.limits = limits
        self.buffered = 0  # body bytes this process holds, over every request not yet answered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits
        if len(scope["query_string"]) > limits.max_query_string_bytes:
            await self.refuse(
                RequestRefused(
                    414,
                    f"The query string is longer than {limits.max_query_string_bytes} bytes; "
                    "send long operations with POST",
                    code=URI_TOO_LONG,
                    headers=CLOSE,
                    extensions={"limit": limits.max_query_string_bytes},
                ),
                scope, receive, send,
            )
            return
        declared, chunked = _body_headers(scope)
        if declared is None and not chunked:
            await self.app(scope, receive, send)  # no body (a GET): nothing to count
            return
        if declared is not None and declared > limits.max_body_bytes:
            await self.refuse(self.too_large(), scope, receive, send)
            return
        held = BodyBytes(self)
        try:
            try:
                async with asyncio.timeout(limits.body_timeout):
                    body = await self.read_body(receive, held)
            except TimeoutError:
                body = self.too_slow()
            if isinstance(body, RequestRefused):
                held.give_back()  # before answering: a client that will not read the refusal holds nothing
                await self.refuse(body, scope, receive, send)
            elif body is not None:
                await self.app(scope, BodyReplay(body, receive).receive, send)
        finally:
            held.give_back()

    async def read_body(self, receive: Receive, held: BodyBytes) -> bytes | RequestRefused | None:
        """The whole body, or why it is refused; None when the client left."""
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # the client left: nobody to answer
            chunk: bytes = message.get("body", b"")
            if held.size + len(chunk) > self.limits.max_body_bytes:
                return self.too_large()
            if not held.take(len(chunk)):
                return self.too_many_bodies()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def too_large(self) -> RequestRefused:
        limit = self.limits.max_body_bytes
        return RequestRefused(
            413,
            f"The request body is larger than {limit} bytes",
            code=PAYLOAD_TOO_LARGE,
            headers=CLOSE,
            extensions={"limit": limit},
        )

    def too_slow(self) -> RequestRefused:
        limit = self.limits.body_timeout
        return RequestRefused(
            408,
            f"The request body did not arrive within {limit:g} seconds",
            code=REQUEST_TIMEOUT,
            headers=CLOSE,
            extensions={"limit": limit},
        )

    def too_many_bodies(self) -> RequestRefused:
        limit = self.limits.max_buffered_body_bytes
        return RequestRefused(
            503,
            f"Server busy: request bodies in flight hold {limit} bytes; retry shortly",
            code=SERVICE_UNAVAILABLE,
            headers={**CLOSE, "retry-after": "1"},
            extensions={"limit": limit},
        )

    @staticmethod
    async def refuse(refused: RequestRefused, scope: Scope, receive: Receive, send: Send) -> None:
        """The refusal in the media type the request accepts (server/media_types.py; its status either way)."""
        media_type = response_media_type(Headers(scope=scope).get("accept")) or JSON
        await refusal_response(refused, media_type)(scope, receive, send)


class BodyBytes:
    """One request's share of the process's buffered body bytes (``RequestLimits.buffered``)."""

    __slots__ = ("limits", "size")

    def __init__(self, limits: RequestLimits) -> None:
        self.limits = limits
        self.size = 0

    def take(self, size: int) -> bool:
        """Count ``size`` more bytes held, unless the process's budget would pass its cap."""
        if self.limits.buffered + size > self.limits.limits.max_buffered_body_bytes:
            return False
        self.limits.buffered += size
        self.size += size
        return True

    def give_back(self) -> None:
        self.limits.buffered -= self.size
        self.size = 0


class BodyReplay:
    """The whole body as the first ``http.request`` message, then the connection's own messages (disconnect)."""

    __slots__ = ("body", "later")

    def __init__(self, body: bytes, later: Receive) -> None:
        self.body: bytes | None = body
        self.later = later

    async def receive(self) -> Message:
        body, self.body = self.body, None
        if body is None:
            return await self.later()
        return {"type": "http.request", "body": body, "more_body": False}


def _body_headers(scope: Scope) -> tuple[int | None, bool]:
    """The declared ``Content-Length`` (None when absent or unreadable) and whether the body is chunked."""
    declared: int | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = None  # uvicorn's parser refuses these before the app; count what arrives
                chunked = True
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked
