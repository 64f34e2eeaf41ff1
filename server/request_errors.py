"""Refusals of malformed or oversized HTTP requests: a GraphQL error body with a stable code, never plain text.

The body is ``{"errors": [{"message", "extensions": {"code", ...}}]}`` with
no ``data`` (the GraphQL-over-HTTP spec's request error), and the status
says what was wrong with the request: 400 malformed, 405 method, 408 a body
too slow, 413 body, 414 query string or URL, 415 content type, 431 headers;
503 when the server cannot take it now (connections or buffered bodies).
``raw_response`` is the same answer as bytes for the protocol layer, which
writes to the socket before any ASGI app runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus

from cross_web import HTTPException
from starlette.responses import Response

from graph.errors import REQUEST_ID_EXTENSION
from observability.log_context import current_request_id
from server import json

BAD_REQUEST = "BAD_REQUEST"
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
URI_TOO_LONG = "URI_TOO_LONG"
HEADERS_TOO_LARGE = "HEADERS_TOO_LARGE"
REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"


class RequestRefused(HTTPException):
    """A request refused before GraphQL runs; strawberry's own ``HTTPException``, so its view lets it through."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        code: str = BAD_REQUEST,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(status_code, message)
        self.code = code
        self.headers = dict(headers or {})
        self.extensions = dict(extensions or {})


def request_extensions(code: str, extensions: Mapping[str, object] | None = None) -> dict[str, object]:
    """A refusal's ``extensions``: its code and details, and the request's id when one is known (as GraphQL's)."""
    request_id = current_request_id()
    return {"code": code, **(extensions or {}), **({} if request_id is None else {REQUEST_ID_EXTENSION: request_id})}


def error_body(message: str, code: str, extensions: Mapping[str, object] | None = None) -> bytes:
    return json.dumps({"errors": [{"message": message, "extensions": request_extensions(code, extensions)}]})


def refusal_response(refused: RequestRefused) -> Response:
    return Response(
        error_body(refused.reason, refused.code, refused.extensions),
        status_code=refused.status_code,
        headers=refused.headers,
        media_type="application/json",
    )


def raw_response(status: HTTPStatus, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """A whole HTTP/1.1 response carrying the JSON ``body``, after which the connection is closed."""
    head = [f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode("ascii")]
    head += [name + b": " + value + b"\r\n" for name, value in headers]
    head.append(f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n".encode())
    return b"".join(head) + body
