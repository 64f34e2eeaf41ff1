"""The one asyncpg pool of a process, and its codecs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from storage.errors import StorageError, StorageUnavailable

QueryLogger = Callable[[asyncpg.connection.LoggedQuery], None]

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


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's reset statement (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL).

    That statement is one more round trip per request, and we never leave
    session state behind: no SET, LISTEN, advisory locks or cursors outside a
    transaction on pooled connections (LISTEN and migrations use connections
    of their own). asyncpg still rolls back an open transaction before this.
    """


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
            reset=_keep_session,
            timeout=10,
            command_timeout=30,
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
        raise StorageUnavailable(f"cannot connect to PostgreSQL: {error}") from error
    assert pool is not None
    return pool


@asynccontextmanager
async def acquire(pool: asyncpg.Pool, *, timeout: float = 10.0) -> AsyncIterator[Connection]:
    """A pooled connection; a pool that cannot give one raises ``StorageUnavailable``."""
    try:
        connection = await pool.acquire(timeout=timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise StorageUnavailable(f"no database connection: {error}") from error
    try:
        yield connection
    finally:
        await pool.release(connection)


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[Connection]:
    """A pooled connection inside one transaction, committed when the block ends without error."""
    async with acquire(pool) as connection:
        try:
            async with connection.transaction():
                yield connection
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            # Raised by BEGIN or COMMIT themselves; statements inside wrap their own.
            raise StorageUnavailable(f"transaction failed: {error}") from error
