"""The caps on one HTTP request, over a real uvicorn server and raw sockets: body, query string, head.

An oversized request is answered as soon as it passes its cap, with a
GraphQL error body and the connection closed, and the server never holds
more of it than the cap: these send hundreds of megabytes and watch the
process's memory while they do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import httpx
import orjson
import pytest

from graph.schema import MAX_DOCUMENT_CHARS
from server.app import create_app
from server.cli import uvicorn_config
from server.settings import HttpLimits, Settings
from tests.http_refusals import refusal_of
from tests.support import ServedUvicorn, free_port, serve_uvicorn

MB = 1024 * 1024
CHUNK = b"x" * (256 * 1024)
VIEWER = b'{"query": "{ viewer { id } }"}'


@pytest.fixture(scope="module")
async def served(settings: Settings) -> AsyncIterator[ServedUvicorn]:
    """The app with the default limits, on a real uvicorn configured as ``portraits serve`` does."""
    config = uvicorn_config(create_app(settings), host="127.0.0.1", port=free_port(), log_level="error")
    async with serve_uvicorn(config) as server:
        yield server


def rss_bytes() -> int:
    """This process's resident memory (the server runs in it)."""
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Exchange:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # bytes of what followed the head that were written before the answer came
    closed: bool  # the server closed the connection after answering
    rss_growth: int  # the most this process's memory grew while it lasted


async def exchange(port: int, head: bytes, rest: Iterable[bytes] = (), *, refused: bool = True) -> Exchange:
    """Send ``head``, then ``rest`` until the server answers or stops reading; the answer, and what it cost.

    ``refused``: wait for the server to close the connection (an answered one stays open, kept alive).
    """
    before = peak = rss_bytes()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.create_task(read_response(reader))
    sent = 0
    try:
        writer.write(head)
        for piece in rest:
            if answer.done():
                break
            writer.write(piece)
            drained = asyncio.ensure_future(writer.drain())
            await asyncio.wait([drained, answer], timeout=30, return_when=asyncio.FIRST_COMPLETED)
            if not drained.done() or drained.exception() is not None:
                drained.cancel()
                break
            sent += len(piece)
            peak = max(peak, rss_bytes())
    except (ConnectionResetError, BrokenPipeError):
        pass  # the server answered and closed while we were still sending
    status, headers, body = await asyncio.wait_for(answer, 30)
    peak = max(peak, rss_bytes())
    closed = False
    try:
        closed = refused and await asyncio.wait_for(reader.read(1), 10) == b""
    except ConnectionResetError:
        closed = True
    except TimeoutError:
        pass
    writer.close()
    return Exchange(status, headers, body, sent, closed, peak - before)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def post_head(*, length: int | None = None, extra: str = "") -> bytes:
    framing = "transfer-encoding: chunked" if length is None else f"content-length: {length}"
    return f"POST /graphql HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n{framing}\r\n{extra}\r\n".encode()


def chunked(total: int) -> Iterator[bytes]:
    """``total`` bytes of body in chunked encoding, 256 KB a chunk (then the last chunk)."""
    for _ in range(total // len(CHUNK)):
        yield b"%x\r\n" % len(CHUNK) + CHUNK + b"\r\n"
    yield b"0\r\n\r\n"


def raw(total: int) -> Iterator[bytes]:
    for _ in range(total // len(CHUNK)):
        yield CHUNK


def refusal(exchange: Exchange, status: int, code: str) -> dict[str, object]:
    return refusal_of(
        exchange.status, exchange.headers.get("content-type"), exchange.body, expected_status=status, code=code,
        request_id=exchange.headers.get("x-request-id"),
    )


async def assert_healthy(server: ServedUvicorn) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(server.url("/healthz", scheme="http"), timeout=10)
    assert response.status_code == 200


async def test_a_streamed_body_over_the_cap_is_cut_off(served: ServedUvicorn) -> None:
    # given a client streaming a 200 MB body with no declared length (chunked)
    limit = HttpLimits().max_body_bytes

    # when it sends as fast as the server reads
    result = await exchange(served.port, post_head(), chunked(200 * MB))

    # then it is answered 413 as soon as the cap is passed, long before the end, and the connection is closed
    error = refusal(result, 413, "PAYLOAD_TOO_LARGE")
    assert error["extensions"] == {"code": "PAYLOAD_TOO_LARGE", "limit": limit}
    assert result.sent < 32 * MB, f"{result.sent / MB:.0f} MB sent before the answer"
    assert result.closed
    # and the server never held the body: the process grew by far less than what was sent
    assert result.rss_growth < 48 * MB, f"grew {result.rss_growth / MB:.0f} MB"
    await assert_healthy(served)


async def test_a_declared_length_over_the_cap_is_refused_before_the_body(served: ServedUvicorn) -> None:
    # given a client declaring a 200 MB body, when it sends only the head
    result = await exchange(served.port, post_head(length=200 * MB))

    # then it is answered 413 at once (nothing of the body was needed) and the connection is closed
    refusal(result, 413, "PAYLOAD_TOO_LARGE")
    assert result.sent == 0
    assert result.closed


async def test_a_declared_length_over_the_cap_is_cut_off_while_it_streams(served: ServedUvicorn) -> None:
    # given a client declaring 200 MB and sending it without waiting for an answer
    result = await exchange(served.port, post_head(length=200 * MB), raw(200 * MB))

    # then it is answered 413 and cut off long before the end
    refusal(result, 413, "PAYLOAD_TOO_LARGE")
    assert result.sent < 32 * MB
    assert result.closed
    assert result.rss_growth < 48 * MB


def body_of(size: int) -> bytes:
    """A GraphQL request of exactly ``size`` bytes (the query padded with whitespace)."""
    return VIEWER[:-1] + b" " * (size - len(VIEWER)) + b"}"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_at_the_cap_is_served_and_one_byte_more_is_not(served: ServedUvicorn, framing: str) -> None:
    limit = HttpLimits().max_body_bytes

    async def send(body: bytes, *, refused: bool) -> Exchange:
        if framing == "chunked":
            head = post_head()
            pieces = [b"%x\r\n" % len(body[i:i + MB]) + body[i:i + MB] + b"\r\n" for i in range(0, len(body), MB)]
            return await exchange(served.port, head, iter([*pieces, b"0\r\n\r\n"]), refused=refused)
        return await exchange(served.port, post_head(length=len(body)), iter([body]), refused=refused)

    # given a request of exactly the cap, when it is sent, then GraphQL answers it
    at_cap = await send(body_of(limit), refused=False)
    assert at_cap.status == 200, at_cap.body[:300]
    assert at_cap.body == b'{"data":{"viewer":null},"errors":[' + at_cap.body.split(b'"errors":[', 1)[1]

    # given one byte more, then it is refused
    over = await send(body_of(limit + 1), refused=True)
    refusal(over, 413, "PAYLOAD_TOO_LARGE")
    assert over.closed


def get_head(target: str, extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nhost: t\r\naccept: application/json\r\n{extra}\r\n".encode()


async def test_a_query_string_over_the_cap_is_a_414(served: ServedUvicorn) -> None:
    limit = HttpLimits().max_query_string_bytes
    query = "query=%7B%20viewer%20%7B%20id%20%7D%20%7D&pad="

    # given a GET whose query string is exactly the cap, when it is sent, then GraphQL answers it
    at_cap = await exchange(served.port, get_head("/graphql?" + query + "a" * (limit - len(query))), refused=False)
    assert at_cap.status == 200, at_cap.body[:300]
    assert b'"viewer":null' in at_cap.body

    # given one byte more, then it is refused with 414, saying the limit
    over = await exchange(served.port, get_head("/graphql?" + query + "a" * (limit + 1 - len(query))))
    error = refusal(over, 414, "URI_TOO_LONG")
    assert error["extensions"] == {"code": "URI_TOO_LONG", "limit": limit}


async def test_a_url_over_the_head_bound_is_a_414(served: ServedUvicorn) -> None:
    # given a URL longer than the whole head may be, when it is sent
    limit = HttpLimits().max_head_bytes
    result = await exchange(served.port, get_head("/graphql?query=" + "a" * limit))

    # then the server's HTTP parser stops at the bound: 414 and the connection closed
    error = refusal(result, 414, "URI_TOO_LONG")
    assert error["extensions"] == {"code": "URI_TOO_LONG", "limit": limit}
    assert result.closed


@pytest.mark.parametrize(
    "headers",
    [
        "x-big: " + "a" * (40 * 1024) + "\r\n",
        "".join(f"x-h{i}: {'a' * 90}\r\n" for i in range(400)),
        "cookie: " + "; ".join(f"c{i}={'v' * 60}" for i in range(600)) + "\r\n",
    ],
    ids=["one 40 KB header", "400 headers of 100 bytes", "a 40 KB cookie"],
)
async def test_headers_over_the_head_bound_are_a_431(served: ServedUvicorn, headers: str) -> None:
    # given a request whose headers are larger than the bound, when it is sent
    result = await exchange(served.port, get_head("/graphql?query=%7B__typename%7D", headers))

    # then it is refused with 431 and the connection closed
    error = refusal(result, 431, "HEADERS_TOO_LARGE")
    assert error["extensions"] == {"code": "HEADERS_TOO_LARGE", "limit": HttpLimits().max_head_bytes}
    assert result.closed


async def test_headers_within_the_bound_are_served(served: ServedUvicorn) -> None:
    # given 20 KB of headers (a large cookie, say), when a query is sent with them, then it is answered
    head = get_head("/graphql?query=%7B__typename%7D", f"cookie: {'v' * 20_000}\r\n")
    result = await exchange(served.port, head, refused=False)

    assert result.status == 200
    assert result.body == b'{"data":{"__typename":"Query"}}'


@pytest.mark.parametrize("where", ["url", "header"])
async def test_a_100_mb_head_is_cut_off(served: ServedUvicorn, where: str) -> None:
    # given a client streaming a 100 MB URL or header, never ending the head
    head = b"GET /graphql?query=" if where == "url" else b"GET /graphql HTTP/1.1\r\nhost: t\r\nx-big: "

    # when it sends as fast as the server reads
    result = await exchange(served.port, head, raw(100 * MB))

    # then it is refused long before the end, the connection closed, and the server held none of it
    assert result.status == (414 if where == "url" else 431)
    assert result.sent < 32 * MB, f"{result.sent / MB:.0f} MB sent before the answer"
    assert result.closed
    assert result.rss_growth < 48 * MB, f"grew {result.rss_growth / MB:.0f} MB"
    await assert_healthy(served)


async def test_the_caps_are_settings(settings: Settings) -> None:
    # given a server with small caps
    limits = HttpLimits(max_body_bytes=4096, max_query_string_bytes=512, max_head_bytes=2048)
    app = create_app(replace(settings, http=limits))
    config = uvicorn_config(app, host="127.0.0.1", port=free_port(), log_level="error", http=limits)
    async with serve_uvicorn(config) as server:
        # when requests just over each are sent, then each is refused with its limit
        body = await exchange(server.port, post_head(length=4097), iter([body_of(4097)]))
        query = await exchange(server.port, get_head("/graphql?query=" + "a" * 600))
        head = await exchange(server.port, get_head("/graphql?query=%7B__typename%7D", f"x-big: {'a' * 2100}\r\n"))

    assert refusal(body, 413, "PAYLOAD_TOO_LARGE")["extensions"] == {"code": "PAYLOAD_TOO_LARGE", "limit": 4096}
    assert refusal(query, 414, "URI_TOO_LONG")["extensions"] == {"code": "URI_TOO_LONG", "limit": 512}
    assert refusal(head, 431, "HEADERS_TOO_LARGE")["extensions"] == {"code": "HEADERS_TOO_LARGE", "limit": 2048}


UNPARSABLE = {
    "a bad request line": b"GARBAGE\r\n\r\n",
    "no HTTP version": b"GET /graphql\r\nhost: t\r\n\r\n",
    "a space in a header name": b"GET /graphql HTTP/1.1\r\nhost: t\r\nbad header: x\r\n\r\n",
    "a control character in a header value": b"GET /graphql HTTP/1.1\r\nhost: t\r\nx: a\x01b\r\n\r\n",
    "both Content-Length and chunked": post_head(length=10, extra="transfer-encoding: chunked\r\n") + b"0\r\n\r\n",
    "a negative Content-Length": post_head(length=-1),
    "a Content-Length that is not a number": post_head(extra="x: y\r\n").replace(
        b"transfer-encoding: chunked", b"content-length: ten"
    ),
    "a bad chunk size": post_head() + b"zz\r\n",
    "HTTP/2 preface over HTTP/1.1": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "a NUL in the method": b"G\x00T / HTTP/1.1\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", UNPARSABLE.values(), ids=UNPARSABLE.keys())
async def test_an_unparsable_request_gets_a_graphql_400(served: ServedUvicorn, request_bytes: bytes) -> None:
    # given bytes uvicorn's HTTP parser refuses, when they are sent
    result = await exchange(served.port, request_bytes)

    # then the answer is a GraphQL error body (not uvicorn's plain text), and the connection is closed
    refusal(result, 400, "BAD_REQUEST")
    assert result.closed
    await assert_healthy(served)


# Bodies in flight: a deadline for each, a budget for all.


@asynccontextmanager
async def serving_limits(settings: Settings, limits: HttpLimits) -> AsyncIterator[ServedUvicorn]:
    app = create_app(replace(settings, http=limits))
    config = uvicorn_config(app, host="127.0.0.1", port=free_port(), log_level="error", http=limits)
    async with serve_uvicorn(config) as server:
        yield server


async def read_until_closed(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server closed the connection (a reset counts) within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


async def test_a_body_dripped_past_the_body_deadline_is_a_408_and_the_connection_closed(settings: Settings) -> None:
    async with serving_limits(settings, HttpLimits(body_timeout=1.0)) as server:
        # given a client declaring 1000 bytes of body and sending one byte every 0.1 s
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post_head(length=1000))

        async def drip() -> None:
            with contextlib.suppress(OSError):
                while True:
                    writer.write(b" ")
                    await writer.drain()
                    await asyncio.sleep(0.1)

        dripping = asyncio.create_task(drip())
        try:
            # when it keeps dripping, then it is answered 408 with the deadline, long before its body could end
            status, headers, body = await asyncio.wait_for(read_response(reader), 10)
            error = refusal_of(
                status, headers.get("content-type"), body, expected_status=408, code="REQUEST_TIMEOUT",
                request_id=headers.get("x-request-id"),
            )
            assert error["extensions"] == {"code": "REQUEST_TIMEOUT", "limit": 1.0}
            # and the connection is closed
            assert await read_until_closed(reader, within=10)
        finally:
            dripping.cancel()
            writer.close()
        # and the server answers others
        await assert_healthy(server)


async def test_bodies_over_the_process_budget_are_a_503_and_the_budget_comes_back(settings: Settings) -> None:
    # given a server that holds at most 160 KiB of bodies at once, 64 KiB of one
    limits = HttpLimits(max_body_bytes=64 * 1024, max_buffered_body_bytes=160 * 1024, body_timeout=30)
    async with serving_limits(settings, limits) as server, contextlib.AsyncExitStack() as stack:
        body = body_of(64 * 1024)
        held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        for _ in range(2):
            # and two clients each holding 60 KiB of a 64 KiB body
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            stack.callback(writer.close)
            writer.write(post_head(length=len(body)) + body[: 60 * 1024])
            await writer.drain()
            held.append((reader, writer))
        await asyncio.sleep(0.5)  # the server has read what they sent

        # when a third sends 60 KiB more, then it is refused 503 with the budget, and closed
        third = await exchange(server.port, post_head(length=len(body)), iter([body[: 60 * 1024]]))
        error = refusal(third, 503, "SERVICE_UNAVAILABLE")
        assert error["extensions"] == {"code": "SERVICE_UNAVAILABLE", "limit": 160 * 1024}
        assert third.headers.get("retry-after") == "1"
        assert third.closed
        # and a request with no body is still served
        await assert_healthy(server)

        # when the held bodies end, then both are answered
        for reader, writer in held:
            writer.write(body[60 * 1024 :])
            status, _, answer = await asyncio.wait_for(read_response(reader), 10)
            assert status == 200, answer[:300]
        # and the budget is back: a whole body is served again
        again = await exchange(server.port, post_head(length=len(body)), iter([body]), refused=False)
        assert again.status == 200, again.body[:300]


async def test_a_document_over_the_character_limit_is_refused_by_its_length_before_it_is_parsed(
    served: ServedUvicorn,
) -> None:
    # given a 2 MiB document that is all comment (lexing it cost 230-290 ms of CPU before it was refused)
    query = "{ __typename }\n#" + "x" * (2 * MB - 200)
    body = orjson.dumps({"query": query})
    assert len(body) <= HttpLimits().max_body_bytes

    # when it is posted, then it is answered (no stall: the bound is generous, the answer takes milliseconds)
    async with asyncio.timeout(5):
        result = await exchange(served.port, post_head(length=len(body)), iter([body]), refused=False)

    # with the schema's own refusal, a GraphQL request error: no data, and 400 (a request without Accept is answered
    # in application/graphql-response+json, as the GraphQL-over-HTTP spec says; application/json would get 200)
    error = refusal(result, 400, "GRAPHQL_VALIDATION_FAILED")
    assert result.headers["content-type"].startswith("application/graphql-response+json")
    assert error["extensions"] == {
        "code": "GRAPHQL_VALIDATION_FAILED", "measure": "characters", "limit": MAX_DOCUMENT_CHARS, "value": len(query)
    }
    assert error["message"] == f"The document has {len(query)} characters; at most {MAX_DOCUMENT_CHARS} are allowed."
