"""A bound on each request's head (request line and headers), which uvicorn's httptools protocol lacks.

uvicorn's h11 protocol refuses a head over ``h11_max_incomplete_event_size``,
but the httptools one it picks when httptools is installed (ours: uvicorn's
``standard`` extra) appends every piece of URL and header the parser hands
it, and httptools itself keeps a header's value until it ends: a client
sending a 100 MB URL or header grew the server by 100 MB. This subclass
counts the head two ways and stops at the bound, answering 414 (the URL is
too long) or 431 with a GraphQL error body, then closing the connection, as
uvicorn does for any unparsable request (which gets a GraphQL error body
here too, 400 BAD_REQUEST, instead of uvicorn's plain text):

- exactly, as the parser hands over the URL (piece by piece) and each header;
- by the bytes received while a head is unfinished, for a header value that
  never ends (counted only for reads that are all head, so a read that also
  ends the previous request never counts: at most one read, 64-256 KB, more).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import ClassVar

from server.request_errors import BAD_REQUEST, HEADERS_TOO_LARGE, URI_TOO_LONG, error_body, raw_response
from server.settings import HttpLimits
from server.uvicorn_protocols import HttpToolsProtocol


class HeadTooLarge(Exception):
    """Raised in a parser callback: httptools stops and uvicorn answers through ``send_400_response``."""


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc]  # uvicorn's class, looked up by name
    """uvicorn's httptools protocol with a bound on each request's head (``max_head_bytes``)."""

    max_head_bytes: ClassVar[int] = HttpLimits().max_head_bytes
    head_bytes = 0  # counted by the parser's callbacks
    head_bytes_received = 0  # counted by reads
    in_head = True  # a request's head has begun (or the connection is new) and is unfinished
    refused_status: HTTPStatus | None = None

    def data_received(self, data: bytes) -> None:
        was_in_head = self.in_head
        super().data_received(data)
        if not (was_in_head and self.in_head) or self.transport.is_closing():
            return
        self.head_bytes_received += len(data)
        if self.head_bytes_received > self.max_head_bytes:
            self.refused_status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
            self.send_400_response("")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_bytes = self.head_bytes_received = 0
        self.in_head = True

    def on_headers_complete(self) -> None:
        self.in_head = False
        super().on_headers_complete()

    def on_url(self, url: bytes) -> None:
        self.count(len(url), HTTPStatus.REQUEST_URI_TOO_LONG)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.count(len(name) + len(value) + 4, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)  # ": " and CRLF
        super().on_header(name, value)

    def count(self, size: int, status: HTTPStatus) -> None:
        self.head_bytes += size
        if self.head_bytes > self.max_head_bytes:
            self.refused_status = status
            raise HeadTooLarge

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot parse, as a GraphQL error body; 414 or 431 past the bound."""
        status = self.refused_status or HTTPStatus.BAD_REQUEST
        limit = self.max_head_bytes
        if status is HTTPStatus.REQUEST_URI_TOO_LONG:
            body = error_body(f"The URL is longer than {limit} bytes", URI_TOO_LONG, {"limit": limit})
        elif status is HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
            body = error_body(
                f"The request line and headers are larger than {limit} bytes", HEADERS_TOO_LARGE, {"limit": limit}
            )
        else:
            body = error_body(f"{msg.rstrip('.')}: not an HTTP/1.1 request this server can parse", BAD_REQUEST)
        self.transport.write(raw_response(status, body, self.server_state.default_headers))
        self.transport.close()


def head_limited_http_protocol(limits: HttpLimits) -> type[HeadLimitedHttpToolsProtocol]:
    """For ``uvicorn.Config(http=...)``: the protocol class bounded by ``limits.max_head_bytes``."""
    return type(
        "HeadLimitedHttpTools", (HeadLimitedHttpToolsProtocol,), {"max_head_bytes": limits.max_head_bytes}
    )
