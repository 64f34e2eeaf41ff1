"""asyncpg's exceptions wrapped once (storage/errors.py): the server going away is "unavailable", not a bug.

A worker retries what it could not record only while the database is
unavailable, and clients get SERVICE_UNAVAILABLE rather than an internal
error, so the class a real server's answer lands in matters.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import asyncpg
import pytest

from devtools.embedded_postgres import EmbeddedPostgres
from storage.errors import StorageError, StorageUnavailable, translate_errors


async def test_a_session_the_server_ends_mid_statement_is_unavailable(database_url: str, pool: asyncpg.Pool) -> None:
    # given a statement running on a session of its own
    connection = await asyncpg.connect(database_url)
    try:

        @translate_errors
        async def long_statement() -> None:
            await connection.execute("SELECT pg_sleep(30)")

        running = asyncio.ensure_future(long_statement())
        pid = connection.get_server_pid()
        async with asyncio.timeout(10):
            while await pool.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid) != "active":
                await asyncio.sleep(0.02)

        # when the server ends the session, as a fast shutdown ends every session (57P01)
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", pid)

        # then the statement fails as "the database is unavailable"
        with pytest.raises(StorageUnavailable, match="terminating connection"):
            await running
    finally:
        await connection.close()


async def test_a_server_that_refuses_new_sessions_while_it_shuts_down_is_unavailable(tmp_path: Path) -> None:
    # given a PostgreSQL of the test's own, with a session open, told to shut down smartly (SIGTERM): it waits
    # for that session to end and meanwhile refuses new ones with 57P03, as a server starting up or in recovery does
    embedded = EmbeddedPostgres(tmp_path / "db", durable=False)
    server = embedded.start()
    holder = await asyncpg.connect(server.dsn)
    try:
        os.kill(server.pid, signal.SIGTERM)

        @translate_errors
        async def new_session() -> None:
            connection = await asyncpg.connect(server.dsn)
            await connection.close()

        # when a storage call opens a session (until the signal has been taken, one may still open)
        async with asyncio.timeout(10):
            while True:
                try:
                    await new_session()
                except StorageError as error:
                    refused = error
                    break
                await asyncio.sleep(0.02)

        # then its failure says the database is unavailable, the server's refusal kept as the cause
        assert isinstance(refused, StorageUnavailable), repr(refused)
        assert isinstance(refused.__cause__, asyncpg.CannotConnectNowError)
    finally:
        await holder.close()
        embedded.stop()


async def test_a_statement_postgresql_refuses_stays_a_plain_storage_error(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:

        @translate_errors
        async def divide() -> None:
            await connection.execute("SELECT 1 / 0")

        with pytest.raises(StorageError) as caught:
            await divide()
        assert not isinstance(caught.value, StorageUnavailable)
    finally:
        await connection.close()
