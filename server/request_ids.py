"""Request ids: ``X-Request-ID`` taken from the client when well-formed, made otherwise, echoed, and logged.

The rule (README: "Logs and request ids"): a request carrying exactly one
``X-Request-ID`` of 1-128 characters from ``A-Z a-z 0-9 . _ : -`` keeps it,
so a proxy's or client's id follows the request through our logs; anything
else (absent, empty, longer, other characters, sent twice) gets a fresh
one: 16 random bytes as 32 hex digits (a ``uuid4().hex``'s randomness at a
fifth of its cost: no UUID object). The characters allowed cannot break a
log line or a header.

The id is set in a context variable for the request's task
(observability/log_context.py), so every log line the request causes,
uvicorn's access line included, carries it, and GraphQL errors carry it in
``extensions.requestId``. Every HTTP response the app sends has it in
``X-Request-ID``, refusals of the request limits and the token check
included. A websocket keeps the id of its upgrade request for its whole life:
every operation it runs logs it; the handshake's response does not carry it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from observability.log_context import bind_request

HEADER = b"x-request-id"  # ASGI gives header names in lower case
MAX_LENGTH = 128
WELL_FORMED = re.compile(rb"[A-Za-z0-9._:-]{1,%d}" % MAX_LENGTH)


def request_id_of(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's id when it sent exactly one well-formed ``X-Request-ID``; else a new one."""
    sent: bytes | None = None
    for name, value in headers:
        if name == HEADER:
            if sent is not None:  # sent twice: neither is the request's
                return os.urandom(16).hex()
            sent = value
    if sent is not None and WELL_FORMED.fullmatch(sent):
        return sent.decode("ascii")
    return os.urandom(16).hex()


class RequestIds:
    """ASGI middleware, outside everything that answers: names each request and socket, echoes the id over HTTP.

    Pure ASGI: the body streams through untouched. A websocket's call, which
    lasts as long as the socket, goes through a plain function and keeps no
    frame of ours on the stack (server/websocket.py says why that counts).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        kind = scope["type"]
        if kind == "http":
            return self.http(scope, receive, send)
        if kind == "websocket":
            bind_request(request_id_of(scope["headers"]))
        return self.app(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = request_id_of(scope["headers"])
        # Not reset afterwards: uvicorn runs each request in a task of its own, and logs a crash of the app
        # ("Exception in ASGI application") in that task after the app returns; that line should carry the id.
        bind_request(request_id)
        header = (HEADER, request_id.encode("ascii"))

        def send_with_id(message: Message) -> Awaitable[None]:  # (plain: no coroutine of its own per message)
            if message["type"] == "http.response.start":
                headers = [(name, value) for name, value in message.get("headers", ()) if name.lower() != HEADER]
                message = {**message, "headers": [*headers, header]}
            return send(message)

        await self.app(scope, receive, send_with_id)
