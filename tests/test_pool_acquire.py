"""``storage.database.acquire``: a pooled connection for a block, released whatever the block does, and a pool that
has none to give refused cleanly (``StorageUnavailable``) within its bound instead of queueing forever."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from storage.database import acquire, create_pool
from storage.errors import StorageUnavailable

# Far past every bound used below: a test that gets here has hung, and fails instead of waiting on.
HUNG = 30.0


@pytest.fixture
async def one_connection(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        yield pool
    finally:
        pool.terminate()


async def test_a_starved_pool_refuses_cleanly_within_its_bound(one_connection: asyncpg.Pool) -> None:
    # given a pool whose only connection a request holds
    async with acquire(one_connection) as held:
        # when another read asks for one, bounded at a fraction of a second
        async with asyncio.timeout(HUNG):
            with pytest.raises(StorageUnavailable, match="no database connection") as refused:
                async with acquire(one_connection, timeout=0.2):
                    pytest.fail("a connection came out of an empty pool")
        still_usable = await held.fetchval("SELECT 1")

    # then it was refused as unavailable (what clients see as SERVICE_UNAVAILABLE), the holder kept its
    # connection, and the pool gives it out again once it is back
    assert isinstance(refused.value.__cause__, TimeoutError)
    assert still_usable == 1
    async with asyncio.timeout(HUNG), acquire(one_connection, timeout=0.2) as again:
        assert await again.fetchval("SELECT 2") == 2
    assert one_connection.get_idle_size() == 1


async def test_a_read_waits_for_a_connection_given_back_within_its_bound(one_connection: asyncpg.Pool) -> None:
    # given a pool whose only connection is held, and a read queued behind it with a generous bound
    holder = await one_connection.acquire()
    waiting = asyncio.create_task(read_one(one_connection))
    await asyncio.sleep(0.05)
    assert not waiting.done()

    # when the connection is given back
    await one_connection.release(holder)

    # then the queued read gets it and runs
    async with asyncio.timeout(HUNG):
        assert await waiting == 1


async def read_one(pool: asyncpg.Pool) -> int:
    async with acquire(pool, timeout=HUNG) as connection:
        value: int = await connection.fetchval("SELECT 1")
        return value


async def test_a_block_that_fails_gives_its_connection_back(one_connection: asyncpg.Pool) -> None:
    # given a block that fails while holding the pool's only connection
    with pytest.raises(ZeroDivisionError):
        async with acquire(one_connection) as connection:
            await connection.fetchval("SELECT 1")
            _ = 1 / 0

    # when the next read asks for a connection
    async with asyncio.timeout(HUNG), acquire(one_connection, timeout=1.0) as connection:
        value = await connection.fetchval("SELECT 3")

    # then it got the one the failed block gave back
    assert value == 3
    assert one_connection.get_idle_size() == 1
