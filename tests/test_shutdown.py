"""SIGTERM to a `portraits serve` under load: every accepted request answered, subscribers told, the job handed back.

A real process on the test database: HTTP clients looping over raw sockets
(so no client library retries or hides a reset), connections whose request
was sent just before the signal, subscribers on both websocket protocols,
requests whose body never finishes arriving, and a job its worker is
rendering (the local renderer, made slow). Then SIGTERM, and what each of
them got.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from starlette.types import Receive, Scope, Send

from server.auth import issue_token
from server.cli import http_drain_seconds, uvicorn_config
from tests.realtime_support import (
    CHARACTER_IMAGE_UPDATED,
    JOB_UPDATED,
    LEGACY_WS,
    PORTRAIT_JOBS,
    TRANSPORT_WS,
    GraphQLSocket,
    Rejected,
    error_codes_of,
    errors_of,
)
from tests.server_process import READY, Server
from tests.support import TEST_JWT_SECRET, subscriptions_live

LOOPING_CLIENTS = 24
LATE_CONNECTIONS = 24
SOCKETS_PER_PROTOCOL = 3
IDLE_CONNECTIONS = 8
SLOW_BODIES = 3
QUERY = orjson.dumps({"query": "{ characters(first: 20) { edges { node { id name imageUrl } } } }"})


def request_bytes(token: str, *, close: bool = False) -> bytes:
    head = (
        "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(QUERY)}\r\n"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    )
    return head.encode() + QUERY


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One whole HTTP/1.1 response (Content-Length framed, as uvicorn answers GraphQL); raises if cut short."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines if line)
    }
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout=30)
    return int(status_line.split()[1]), headers, body


def outcome(status: int, body: bytes) -> str:
    """"ok" for a GraphQL answer, "unavailable" for the JSON 503; anything else says what came instead."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"{status} not JSON: {body[:200]!r}"
    if status == 200 and "errors" not in decoded:
        return "ok"
    if status == 503 and [error["extensions"]["code"] for error in decoded["errors"]] == ["SERVICE_UNAVAILABLE"]:
        return "unavailable"
    return f"{status} {body[:200]!r}"


async def looping_client(url_port: int, token: str, stopping: asyncio.Event) -> list[str]:
    """Requests on one keep-alive connection (a new one when the server closes it) until the signal is sent."""
    outcomes: list[str] = []
    while not stopping.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", url_port)
        try:
            while not stopping.is_set():
                writer.write(request_bytes(token))
                try:
                    status, headers, body = await read_response(reader)
                except (asyncio.IncompleteReadError, ConnectionError) as error:
                    outcomes.append(f"no answer: {error!r}")
                    return outcomes
                outcomes.append(outcome(status, body))
                if headers.get("connection") == "close":
                    break
        finally:
            writer.close()
    return outcomes


async def late_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
    try:
        status, _, body = await read_response(reader)
    except (asyncio.IncompleteReadError, ConnectionError) as error:
        return f"no answer: {error!r}"
    finally:
        writer.close()
    return outcome(status, body)


async def slow_body_request(port: int, token: str, stopping: asyncio.Event) -> str:
    """A request whose body trickles in and never completes: cut by the grace period, it must still be answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = request_bytes(token)[: -len(QUERY)]
    writer.write(head + QUERY[:5])
    sender = asyncio.create_task(trickle(writer, stopping))
    try:
        return await late_request(reader, writer)
    finally:
        sender.cancel()


async def trickle(writer: asyncio.StreamWriter, stopping: asyncio.Event) -> None:
    """A space every half second (JSON whitespace, so the body stays valid and never ends)."""
    while True:
        await asyncio.sleep(0.5)
        writer.write(b" ")
        await writer.drain()


async def goodbye(socket: GraphQLSocket, operations: list[str]) -> tuple[list[tuple[str, list[str]]], int | None]:
    """What the socket got after the signal: (operation id, error codes) per message, then the close code."""
    got: list[tuple[str, list[str]]] = []
    while True:
        try:
            message = await socket.next_result(timeout=30)
        except Rejected as closed:
            return got, closed.code
        if message.get("id") in operations and message["type"] == "error":
            assert all(error["message"] for error in errors_of(message)), message
            got.append((message["id"], error_codes_of(message)))


async def test_sigterm_under_load_answers_every_request_ends_subscriptions_and_hands_back_the_job(
    tmp_path: Path, servers: list[Server], database_url: str, pool: asyncpg.Pool
) -> None:
    # given `portraits serve` whose worker renders for a minute, with a short grace for running jobs
    server = Server(
        tmp_path, DATABASE_URL=database_url, JWT_SECRET=TEST_JWT_SECRET,
        LOCAL_RENDER_LATENCY_MS="60000", SHUTDOWN_GRACE_SECONDS="2", LOG_LEVEL="info",
    )
    servers.append(server)
    server.wait_for(READY)
    users = [uuid.uuid4() for _ in range(3)]
    tokens = [issue_token(TEST_JWT_SECRET, user, ttl=timedelta(minutes=10)) for user in users]

    # and a job the worker is running
    async with AsyncExitStack() as stack:
        first_socket = await stack.enter_async_context(
            GraphQLSocket.open(server.url.replace("http", "ws") + "/graphql", token=tokens[0])
        )
        job_id = await start_job(server, tokens[0])
        await wait_until_running(pool, job_id)

        # and subscribers on both protocols, subscribed to the job and to image changes
        subscribed: list[tuple[GraphQLSocket, list[str]]] = [
            (first_socket, [await first_socket.subscribe(JOB_UPDATED, {"id": job_id})])
        ]
        for protocol in (TRANSPORT_WS, LEGACY_WS):
            for index in range(SOCKETS_PER_PROTOCOL):
                socket = await stack.enter_async_context(
                    GraphQLSocket.open(
                        server.url.replace("http", "ws") + "/graphql", protocol=protocol, token=tokens[index % 3]
                    )
                )
                operations = [
                    await socket.subscribe(CHARACTER_IMAGE_UPDATED),
                    await socket.subscribe(PORTRAIT_JOBS),
                ]
                subscribed.append((socket, operations))
        await subscriptions_live(server.url, sum(len(operations) for _, operations in subscribed))

        # and HTTP clients keeping the server busy
        stopping = asyncio.Event()
        clients = [
            asyncio.create_task(looping_client(server.port, tokens[index % 3], stopping))
            for index in range(LOOPING_CLIENTS)
        ]
        slow = [
            asyncio.create_task(slow_body_request(server.port, tokens[index % 3], stopping))
            for index in range(SLOW_BODIES)
        ]
        await asyncio.sleep(1.5)

        # when connections send a request, and SIGTERM follows before the server can have read them
        late = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(LATE_CONNECTIONS)]
        for index, (_, writer) in enumerate(late):
            writer.write(request_bytes(tokens[index % 3], close=index % 2 == 0))
        await asyncio.gather(*(writer.drain() for _, writer in late))
        server.process.send_signal(signal.SIGTERM)
        stopping.set()

        # then every request accepted got a whole answer: the GraphQL result, or a JSON 503
        looped = [result for results in await asyncio.gather(*clients) for result in results]
        late_outcomes = await asyncio.gather(*(late_request(reader, writer) for reader, writer in late))
        refused = [result for result in [*looped, *late_outcomes] if result not in ("ok", "unavailable")]
        assert refused == [], refused
        # and a request whose body was still arriving when the grace ran out got a JSON 503 SERVICE_UNAVAILABLE
        assert await asyncio.gather(*slow) == ["unavailable"] * SLOW_BODIES
        assert len(looped) > LOOPING_CLIENTS and len(late_outcomes) == LATE_CONNECTIONS

        # and every subscription got SERVICE_UNAVAILABLE for its id, then its socket the close 1012
        for socket, operations in subscribed:
            messages, code = await goodbye(socket, operations)
            assert sorted(messages) == sorted((operation, ["SERVICE_UNAVAILABLE"]) for operation in operations), (
                socket.protocol, messages,
            )
            assert code == 1012, (socket.protocol, code)

    # and the process exits 0, its worker having handed the job back: queued, due now, no lease, the attempt released
    assert await asyncio.to_thread(server.process.wait, 60) == 0
    output = server.rest_of_output()
    assert "Traceback" not in output, output
    job = await pool.fetchrow(
        "SELECT status, locked_by, locked_until, run_after <= now() AS due, attempts FROM jobs WHERE id = $1",
        uuid.UUID(job_id),
    )
    assert job is not None
    assert (job["status"], job["locked_by"], job["locked_until"], job["due"], job["attempts"]) == (
        "queued", None, None, True, 0,
    )
    outcomes = [row["outcome"] for row in await pool.fetch(
        "SELECT outcome FROM job_attempts WHERE job_id = $1 ORDER BY number", uuid.UUID(job_id)
    )]
    assert outcomes == ["released"]


async def test_a_request_reaching_an_idle_connection_as_shutdown_begins_is_answered_then_the_connection_closed(
    tmp_path: Path, servers: list[Server], database_url: str
) -> None:
    # given keep-alive connections that have been answered once and are idle
    server = Server(tmp_path, DATABASE_URL=database_url, JWT_SECRET=TEST_JWT_SECRET, WORKERS="0")
    servers.append(server)
    server.wait_for(READY)
    token = issue_token(TEST_JWT_SECRET, uuid.uuid4(), ttl=timedelta(minutes=10))
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(IDLE_CONNECTIONS)]
    for reader, writer in idle:
        writer.write(request_bytes(token))
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers.get("connection") != "close"

    # when the server has begun shutting down (uvicorn has told every connection), and their next requests come
    server.process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(server.wait_for, "Shutting down")
    for _, writer in idle:
        writer.write(request_bytes(token))

    # then each is answered, with Connection: close, and the connection then closed by the server
    for reader, writer in idle:
        status, headers, body = await read_response(reader)
        assert (outcome(status, body), headers.get("connection")) == ("ok", "close")
        assert await asyncio.wait_for(reader.read(), timeout=30) == b""
        writer.close()
    assert await asyncio.to_thread(server.process.wait, 60) == 0


async def start_job(server: Server, token: str) -> str:
    """A character and a portrait job for it, over the server's own HTTP API."""
    created = await post(server, token, 'mutation { createCharacter(input: {name: "Ada", description: "d"}) { id } }')
    character_id = created["data"]["createCharacter"]["id"]
    started = await post(
        server, token, f'mutation {{ generateCharacterPortrait(input: {{characterId: "{character_id}"}}) {{ id }} }}'
    )
    job_id: str = started["data"]["generateCharacterPortrait"]["id"]
    return job_id


async def post(server: Server, token: str, query: str) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    body = orjson.dumps({"query": query})
    writer.write(
        b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )
    try:
        status, _, answer = await read_response(reader)
    finally:
        writer.close()
    decoded: dict[str, Any] = orjson.loads(answer)
    assert status == 200 and "errors" not in decoded, decoded
    return decoded


async def wait_until_running(pool: asyncpg.Pool, job_id: str) -> None:
    for _ in range(1500):
        status = await pool.fetchval("SELECT status FROM jobs WHERE id = $1", uuid.UUID(job_id))
        if status == "processing":
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the server's worker never claimed the job")


def test_requests_in_flight_get_the_grace_less_what_the_goodbyes_and_the_backlog_take() -> None:
    # given the default grace (8 s) and the two steps before uvicorn's drain (1 s each, at most)
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        """Never called: only the configuration is read."""

    config = uvicorn_config(app, host="127.0.0.1", port=0, log_level="warning")
    # then uvicorn's own timeout leaves them room, so the HTTP drain ends within the grace of the signal
    assert config.timeout_graceful_shutdown == 6
    assert http_drain_seconds(2) == http_drain_seconds(1) == 1
