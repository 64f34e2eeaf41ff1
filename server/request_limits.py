"""The query-string and body caps of every HTTP request, checked before any route runs.

uvicorn hands a request's body to the app in chunks as it arrives and holds
at most about 64 KB of it unread (its flow control pauses the socket). This
middleware reads those chunks, counting, and stops at the cap: an oversized
body is answered 413 (at once when its ``Content-Length`` says so) and the
connection closed, so the server never holds more than the cap of one
body. Under the cap the body is handed to the app in one piece, as every
route here reads bodies whole anyway (strawberry's view does).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.request_errors import PAYLOAD_TOO_LARGE, URI_TOO_LONG, RequestRefused, refusal_response
from server.settings import HttpLimits

# The refusal is sent before the body is read: the connection cannot carry another request.
CLOSE = {"connection": "close"}


class RequestLimits:
    """Outermost ASGI middleware for HTTP: 414 over the query-string cap, 413 over the body cap."""

    def __init__(self, app: ASGIApp, limits: HttpLimits) -> None:
        self.app = app
        self.limits = limits

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
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left: nobody to answer
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limits.max_body_bytes:
                await self.refuse(self.too_large(), scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, BodyReplay(b"".join(chunks), receive).receive, send)

    def too_large(self) -> RequestRefused:
        limit = self.limits.max_body_bytes
        return RequestRefused(
            413,
            f"The request body is larger than {limit} bytes",
            code=PAYLOAD_TOO_LARGE,
            headers=CLOSE,
            extensions={"limit": limit},
        )

    @staticmethod
    async def refuse(refused: RequestRefused, scope: Scope, receive: Receive, send: Send) -> None:
        await refusal_response(refused)(scope, receive, send)


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
