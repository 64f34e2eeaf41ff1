"""The one asyncpg pool of a process, and its codecs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from types import TracebackType
from typing import Any, TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from storage.errors import UNREACHABLE, StorageError, StorageUnavailable

QueryLogger = Callable[[asyncpg.connection.LoggedQuery], None]
# What opening, acquiring, BEGIN or COMMIT can raise: all of it means no usable connection (StorageUnavailable).
CONNECTION_FAILED: tuple[type[BaseException], ...] = (*UNREACHABLE, asyncpg.PostgresError)

# What a storage query runs on: a connection of its own (asyncpg.connect) or
# a pooled one (``acquire`` and ``transaction`` hand out the pool's proxies).
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy
# ... or the pool itself, for one statement in a transaction of its own.
Executor: TypeAlias = Connection | asyncpg.Pool


def returned(row: asyncpg.Record | None) -> asyncpg.Record:
    """The row an ``INSERT ... RETURNING`` gave back; none at all is a broken statement, not a missing row."""
    if row is None:
        raise StorageError("the statement returned no row")
    return row


async def _init_connection(connection: asyncpg.Connection, *, query_logger: QueryLogger | None = None) -> None:
    """jsonb and json columns come back as Python values, and go in from them."""
    if query_logger is not None:
        connection.add_query_logger(query_logger)
    for type_name in ("jsonb", "json"):
        await connection.set_type_codec(
            type_name,
            schema="pg_catalog",
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
            format="text",
        )


class ResyncingConnection(asyncpg.Connection):
    """asyncpg's connection, remembering that a statement of it was cut short by a cancelled task.

    asyncpg prepares a statement it has not run on this connection yet with Parse, Describe and Flush, and sends
    the Sync only with the Bind that follows (also for its own type introspection). A task cancelled between
    the two leaves the server inside that statement's implicit transaction: "active", waiting for the client,
    holding the locks the statement took, for as long as the connection sits in the pool. Our pool skips
    asyncpg's reset statement, which would have ended it (``_reset_session``), so an interrupted connection
    is sent that statement when it is released. Seen in CI: two pooled connections held the data tables for
    minutes after websockets closed while their subscriptions re-read (tests/test_database_cancellation.py).
    """

    interrupted = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._interruption_guard = _InterruptionGuard(self)

    async def execute(self, query: str, *args: object, timeout: float | None = None) -> str:
        with self._interruption_guard:
            return await super().execute(query, *args, timeout=timeout)

    async def fetch(self, query: str, *args: object, timeout: float | None = None, record_class: Any = None) -> Any:
        with self._interruption_guard:
            return await super().fetch(query, *args, timeout=timeout, record_class=record_class)

    async def fetchrow(
        self, query: str, *args: object, timeout: float | None = None, record_class: Any = None
    ) -> Any:
        with self._interruption_guard:
            return await super().fetchrow(query, *args, timeout=timeout, record_class=record_class)

    async def fetchval(self, query: str, *args: object, column: int = 0, timeout: float | None = None) -> Any:
        with self._interruption_guard:
            return await super().fetchval(query, *args, column=column, timeout=timeout)


class _InterruptionGuard:
    """Marks its connection interrupted when a cancellation passes through; one per connection, reused."""

    __slots__ = ("_connection",)

    def __init__(self, connection: ResyncingConnection) -> None:
        self._connection = connection

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is not None and issubclass(kind, asyncio.CancelledError):
            self._connection.interrupted = True


async def _reset_session(connection: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's reset statement (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL)
    unless a cancelled task interrupted one of their statements.

    That statement is one more round trip per request, and we never leave
    session state behind: no SET, LISTEN, advisory locks or cursors outside a
    transaction on pooled connections (LISTEN and migrations use connections
    of their own). asyncpg still rolls back an open transaction before this.
    An interrupted statement may have left the server mid-statement, which
    only a statement sent in the simple protocol ends (``ResyncingConnection``).
    """
    if isinstance(connection, ResyncingConnection) and connection.interrupted:
        connection.interrupted = False
        await connection.execute(connection.get_reset_query() or "SELECT 1")


async def create_pool(
    dsn: str, *, max_size: int = 10, min_size: int = 1, query_logger: QueryLogger | None = None
) -> asyncpg.Pool:
    """Open the process's pool; fails fast with ``StorageUnavailable`` when the server is not there.

    ``query_logger`` sees every statement the pool runs (tests count statements per request with it).
    """
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min(min_size, max_size),
            max_size=max_size,
            init=partial(_init_connection, query_logger=query_logger),
            reset=_reset_session,
            connection_class=ResyncingConnection,
            timeout=10,
            command_timeout=30,
        )
    except CONNECTION_FAILED as error:
        raise StorageUnavailable(f"cannot connect to PostgreSQL: {error}") from error
    assert pool is not None
    return pool


# How long a request waits for a pooled connection before StorageUnavailable.
ACQUIRE_TIMEOUT = 10.0


class Acquired:
    """``async with acquire(pool) as connection``: a pooled connection, released when the block ends.

    A class rather than an ``asynccontextmanager``: every read takes one, and an async generator costs a
    generator, its ``athrow``/``asend`` steps and the event loop's asyncgen hooks (a WeakSet entry added and
    removed) each time, for the same two awaits.
    """

    __slots__ = ("_connection", "_pool", "_timeout")

    def __init__(self, pool: asyncpg.Pool, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self._connection: PoolConnectionProxy | None = None

    async def __aenter__(self) -> Connection:
        try:
            connection: PoolConnectionProxy = await self._pool.acquire(timeout=self._timeout)
        except CONNECTION_FAILED as error:
            raise StorageUnavailable(f"no database connection: {error}") from error
        self._connection = connection
        return connection

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._pool.release(connection)


def acquire(pool: asyncpg.Pool, *, timeout: float = ACQUIRE_TIMEOUT) -> Acquired:
    """A pooled connection; a pool that cannot give one within ``timeout`` seconds raises ``StorageUnavailable``."""
    return Acquired(pool, timeout)


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[Connection]:
    """A pooled connection inside one transaction, committed when the block ends without error."""
    async with acquire(pool) as connection:
        try:
            async with connection.transaction():
                yield connection
        except CONNECTION_FAILED as error:
            # Raised by BEGIN or COMMIT themselves; statements inside wrap their own.
            raise StorageUnavailable(f"transaction failed: {error}") from error
