"""A small GraphQL-over-websocket client for tests: both protocols, as real clients speak them.

graphql-transport-ws (the graphql-ws library, Apollo Client 3.5+): connection_init
-> connection_ack, subscribe -> next* -> complete | error.
graphql-ws (subscriptions-transport-ws, the legacy one): connection_init ->
connection_ack | connection_error, start -> data* -> complete | error, and "ka" keep-alives.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import asyncpg
import orjson
import pytest
import redis.asyncio as redis
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
PROTOCOLS = (TRANSPORT_WS, LEGACY_WS)

JOB_UPDATED = """
subscription($id: ID!) { jobUpdated(id: $id) {
    id status destination seed error characterId
    providerProgress { status queuePosition }
    character { id imageUrl }
    libraryAsset { id path }
} }
"""
CHARACTER_IMAGE_UPDATED = """
subscription($characterId: ID) { characterImageUpdated(characterId: $characterId) {
    id name imageUrl signedImageUrl { url expiresAt }
} }
"""
PORTRAIT_JOBS = "subscription { portraitJobs { id status destination characterId } }"


class Rejected(Exception):
    """The server refused the connection: ``code`` is the close code, ``payload`` a connection_error's payload."""

    def __init__(self, code: int | None, reason: str, payload: Any = None) -> None:
        super().__init__(f"rejected: {code} {reason} {payload}")
        self.code = code
        self.reason = reason
        self.payload = payload


class GraphQLSocket:
    def __init__(self, connection: ClientConnection, protocol: str) -> None:
        self.connection = connection
        self.protocol = protocol
        self._ids = itertools.count(1)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        url: str,
        *,
        protocol: str = TRANSPORT_WS,
        token: str | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[GraphQLSocket]:
        """Connect and initialise; ``token`` goes into connection_init as graphql-ws clients send it."""
        payload = dict(params or {})
        if token is not None:
            payload["Authorization"] = f"Bearer {token}"
        connection = await websockets.connect(
            url, subprotocols=[Subprotocol(protocol)], additional_headers=headers, open_timeout=10
        )
        try:
            socket = cls(connection, protocol)
            await socket.send({"type": "connection_init", "payload": payload})
            while True:
                message = await socket.receive()
                if message["type"] == "connection_ack":
                    break
                if message["type"] == "connection_error":
                    raise Rejected(None, "connection_error", message.get("payload"))
            yield socket
        finally:
            await connection.close()

    async def send(self, message: Mapping[str, Any]) -> None:
        await self.connection.send(orjson.dumps(message).decode())

    async def receive(self, timeout: float = 15) -> dict[str, Any]:
        """The next message (keep-alives skipped); ``Rejected`` when the server closed the socket."""
        while True:
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that lands as
                # a message arrives, and a reader cancelled that way went on waiting (an hour, in CI)
                async with asyncio.timeout(timeout):
                    raw = await self.connection.recv()
            except ConnectionClosed as closed:
                received = closed.rcvd
                raise Rejected(received.code if received else None, received.reason if received else "") from None
            assert isinstance(raw, str), f"graphql websocket messages are text frames, got {type(raw)}"
            message: dict[str, Any] = orjson.loads(raw)
            if message.get("type") != "ka":
                return message

    async def subscribe(self, query: str, variables: Mapping[str, Any] | None = None) -> str:
        operation_id = str(next(self._ids))
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        payload = {"query": query, "variables": dict(variables or {})}
        await self.send({"id": operation_id, "type": kind, "payload": payload})
        return operation_id

    async def stop(self, operation_id: str) -> None:
        await self.send({"id": operation_id, "type": "complete" if self.protocol == TRANSPORT_WS else "stop"})

    async def next_result(self, timeout: float = 15) -> dict[str, Any]:
        """The next result of any operation as ``{"id", "type": next|error|complete, "payload"}``, protocol-neutral."""
        message = await self.receive(timeout)
        if message["type"] == "data":
            message["type"] = "next"
        return message

    async def results_until_complete(self, operation_id: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Every payload of ``operation_id`` up to its complete (an error ends it too), in order."""
        results: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            assert remaining > 0, f"no complete within {timeout} s; got {results}"
            message = await self.next_result(remaining)
            if message.get("id") != operation_id:
                continue
            if message["type"] == "complete":
                return results
            results.append(message)
            if message["type"] == "error":  # ends the operation in both protocols; no complete follows
                return results


def data_of(message: dict[str, Any], field: str) -> dict[str, Any]:
    assert message["type"] == "next", message
    assert not message["payload"].get("errors"), message
    value: dict[str, Any] = message["payload"]["data"][field]
    return value


def errors_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The errors of a next/data message, or of an error message (a list in one protocol, one error in the other)."""
    payload = message["payload"]
    errors: list[dict[str, Any]] = payload if isinstance(payload, list) else payload.get("errors") or [payload]
    return errors


def error_codes_of(message: dict[str, Any]) -> list[str]:
    """The extensions.code of each error in a next/data or error message."""
    return [error.get("extensions", {}).get("code") for error in errors_of(message)]


class SilentableProxy:
    """A real TCP hop to a server that can go silent on the connections it carries, as a dead network does.

    ``silence`` stops forwarding on every connection open now, in both
    directions, without closing anything (no FIN, no RST): only a health
    check notices. Connections opened after it are forwarded as usual.
    ``refuse`` closes every connection and closes new ones at once (counting
    them in ``refused``) until ``accept``, as a server that is restarting.
    ``target`` is ``(host, port)``, or a Unix socket path (the embedded
    PostgreSQL listens on one).
    """

    def __init__(self, target: tuple[str, int] | str, *, port: int = 0) -> None:
        self._target = target
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._refusing = False
        self.refused = 0
        self.port = port

    async def __aenter__(self) -> SilentableProxy:
        self._server = await asyncio.start_server(self._carry, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.silence()
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def silence(self) -> None:
        for pipe in self._pipes:
            pipe.cancel()
        self._pipes.clear()

    def refuse(self) -> None:
        self._refusing = True
        self.silence()
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    def accept(self) -> None:
        self._refusing = False

    async def _carry(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.refused += 1
            client_writer.close()
            return
        if isinstance(self._target, str):
            server_reader, server_writer = await asyncio.open_unix_connection(self._target)
        else:
            server_reader, server_writer = await asyncio.open_connection(*self._target)
        self._writers += [client_writer, server_writer]
        for reader, writer in ((client_reader, server_writer), (server_reader, client_writer)):
            pipe = asyncio.create_task(self._pipe(reader, writer))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        writer.close()


def postgres_target(dsn: str) -> tuple[str, int] | str:
    """Where a DSN of the tests' server points: ``(host, port)``, or the Unix socket's path."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    port = int(query.get("port") or parts.port or 5432)
    host = query.get("host") or parts.hostname or "127.0.0.1"
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)


def dsn_through(dsn: str, port: int) -> str:
    """The same DSN (user, database) reached over TCP at 127.0.0.1:``port``."""
    parts = urlsplit(dsn)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit((parts.scheme, f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}",
                       parts.path, "sslmode=disable", ""))


# -- the database and Redis under the realtime tests ----------------------------------

REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_is_running() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        return False
    return True


needs_redis = pytest.mark.skipif(not redis_is_running(), reason="no Redis on 127.0.0.1:6379")


async def insert_character(pool: asyncpg.Pool, user: uuid.UUID, image_url: str | None = None) -> uuid.UUID:
    character_id: uuid.UUID = await pool.fetchval(
        "INSERT INTO characters (user_id, name, description, image_url) VALUES ($1, 'N', 'D', $2) RETURNING id",
        user, image_url,
    )
    return character_id


async def set_image(pool: asyncpg.Pool, character_id: uuid.UUID, image_url: str | None) -> None:
    await pool.execute("UPDATE characters SET image_url = $2 WHERE id = $1", character_id, image_url)


async def set_image_in(connection: asyncpg.pool.PoolConnectionProxy[asyncpg.Record], character_id: uuid.UUID,
                       image_url: str) -> None:
    """The same inside a transaction of the caller's."""
    await connection.execute("UPDATE characters SET image_url = $2 WHERE id = $1", character_id, image_url)


async def terminate(pool: asyncpg.Pool, application_name: str) -> int:
    """Kill the LISTEN connection(s) by name and wait until the server has let them go."""
    pids = await pool.fetch(
        "SELECT pg_terminate_backend(pid), pid FROM pg_stat_activity WHERE application_name = $1", application_name
    )
    while await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", [row["pid"] for row in pids]
    ):
        await asyncio.sleep(0.01)
    return len(pids)


async def kill_redis_pubsub_connections() -> int:
    """CLIENT KILL TYPE pubsub, as a Redis restart or a proxy's cut would do to every subscriber."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        killed: int = await client.execute_command("CLIENT KILL TYPE pubsub")
    finally:
        await client.aclose()
    return killed
