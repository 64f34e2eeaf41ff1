"""A task cancelled while its statement runs never leaves a pooled connection holding the server mid-statement.

asyncpg prepares a statement it has not run on a connection yet with Parse,
Describe and Flush and sends the Sync only with the Bind that follows; a task
cancelled between the two used to leave the backend "active", waiting for the
client inside the statement's implicit transaction, with its locks held for as
long as the connection sat in the pool (it blocked TRUNCATE for minutes in CI).
The window is a few microseconds wide, so the test cancels many first-time
statements at delays spread over the length of one and counts what is left.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from storage.database import acquire, create_pool

POOL_SIZE = 4
TRIALS = 120

LEFT_MID_STATEMENT = """
SELECT pid, state, wait_event, left(query, 80) AS query
FROM pg_stat_activity
WHERE pid = ANY($1::int[]) AND state <> 'idle'
"""


@pytest.fixture
async def fresh_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=POOL_SIZE, max_size=POOL_SIZE)
    try:
        yield pool
    finally:
        pool.terminate()  # whatever state a failure left, the backends go with it


async def backend_pids(pool: asyncpg.Pool) -> list[int]:
    connections = [await pool.acquire() for _ in range(POOL_SIZE)]
    try:
        return [connection.get_server_pid() for connection in connections]
    finally:
        for connection in connections:
            await pool.release(connection)


async def first_time_read(pool: asyncpg.Pool, label: str) -> None:
    """A statement no connection has prepared yet (its text is new), with an array parameter, as loaders run."""
    async with acquire(pool) as connection:
        await connection.fetch(f"SELECT id FROM characters WHERE id = ANY($1::uuid[]) /* {label} */", [uuid.uuid4()])


async def test_cancelled_first_time_statements_leave_no_backend_mid_statement(
    fresh_pool: asyncpg.Pool, server_url: str
) -> None:
    # given: a pool whose backends we know, and how long one first-time statement takes
    pids = await backend_pids(fresh_pool)
    started = time.perf_counter()
    for label in range(5):
        await first_time_read(fresh_pool, f"timing {label}")
    statement_seconds = (time.perf_counter() - started) / 5

    # when: a burst of first-time statements is cancelled, trial after trial, at delays across that length
    left_behind: list[dict[str, object]] = []
    admin = await asyncpg.connect(server_url)
    try:
        for trial in range(TRIALS):
            tasks = [
                asyncio.create_task(first_time_read(fresh_pool, f"trial {trial} task {n}")) for n in range(POOL_SIZE)
            ]
            await asyncio.sleep(statement_seconds * 1.5 * trial / TRIALS)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0.01)  # the released connection is idle for the pool; is it for the server?
            left_behind += [dict(row) for row in await admin.fetch(LEFT_MID_STATEMENT, pids)]
    finally:
        await admin.close()

    # then: every backend is idle between uses, and the pool still answers
    assert left_behind == []
    assert await fresh_pool.fetchval("SELECT 1") == 1
