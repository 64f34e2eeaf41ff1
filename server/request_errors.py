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
from server.http_caching import NO_STORE
from server.media_types import GRAPHQL_RESPONSE_JSON, JSON, SERVED

BAD_REQUEST = "BAD_REQUEST"
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
URI_TOO_LONG = "URI_TOO_LONG"
HEADERS_TOO_LARGE = "HEADERS_TOO_LARGE"
REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
NOT_ACCEPTABLE = "NOT_ACCEPTABLE"
# A request error's status in application/graphql-response+json, by the code of its errors (others: 400).
REQUEST_ERROR_STATUS = {SERVICE_UNAVAILABLE: 503, "INTERNAL_SERVER_ERROR": 500}


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


def refusal_response(refused: RequestRefused, media_type: str = JSON) -> Response:
    """The refusal as a GraphQL error body in ``media_type`` (server/media_types.py).

    A refusal with a 2xx status is a GraphQL request error that application/json answers 200 (the spec's
    SHOULD for a well-formed request); application/graphql-response+json answers it 400, as a body without
    ``data`` must have a 4xx or 5xx there.
    """
    status = refused.status_code
    if media_type == GRAPHQL_RESPONSE_JSON and status < 300:
        status = 400
    return Response(
        error_body(refused.reason, refused.code, refused.extensions),
        status_code=status,
        # Its type (and for a request error its status) depends on Accept: a cache must not answer another with it.
        # Never kept by a cache (a 405 or 404 may be, by default), unless the refusal says otherwise.
        headers={
            "cache-control": NO_STORE, **refused.headers,
            "content-type": response_content_type(media_type), "vary": "Accept",
        },
    )


def response_content_type(media_type: str) -> str:
    """The ``Content-Type`` of an answer: application/json as it always was, the GraphQL type with its charset
    (the spec's SHOULD)."""
    return f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8" if media_type == GRAPHQL_RESPONSE_JSON else JSON


def request_error_status(errors: Iterable[object]) -> int:
    """The 4xx or 5xx of a GraphQL request error (formatted errors) in application/graphql-response+json:
    503 or 500 when the server failed (by the errors' codes), else 400."""
    codes = {
        error.get("extensions", {}).get("code") for error in errors
        if isinstance(error, dict) and isinstance(error.get("extensions"), dict)
    }
    return max((REQUEST_ERROR_STATUS[code] for code in codes if code in REQUEST_ERROR_STATUS), default=400)


def not_acceptable(accept: str) -> RequestRefused:
    """406: the ``Accept`` header admits neither type /graphql answers in (the spec's RECOMMENDED answer)."""
    return RequestRefused(
        406,
        f"Not acceptable: /graphql answers {SERVED}; the Accept header admits neither",
        code=NOT_ACCEPTABLE,
        headers={"accept": SERVED},
        extensions={"accept": accept[:200]},
    )


def raw_response(status: HTTPStatus, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """A whole HTTP/1.1 response carrying the JSON ``body``, after which the connection is closed."""
    head = [f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode("ascii")]
    head += [name + b": " + value + b"\r\n" for name, value in headers]
    head.append(f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n".encode())
    return b"".join(head) + body
