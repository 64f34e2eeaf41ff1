"""Workers wake on NOTIFY, not on their slow poll, and keep waking after the LISTEN connection drops."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from pipeline.signals import APPLICATION_NAME
from pipeline.worker import backoff_seconds
from tests.generation_support import GraphQL, create_character, generate_portrait, wait_for_job

# Far beyond wait_for_job's deadline: a job done in time was woken by NOTIFY.
SLOW_POLL_SECONDS = 300.0


async def listening_backends(pool: asyncpg.Pool) -> list[int]:
    rows = await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
        APPLICATION_NAME,
    )
    return [row["pid"] for row in rows]


async def test_an_idle_worker_is_woken_by_the_insert_notification(
    graphql: GraphQL, pool: asyncpg.Pool, start_generation: Callable[..., Awaitable[Any]], alice: uuid.UUID
) -> None:
    # given an idle worker that would poll only every five minutes
    await start_generation("local", poll_seconds=SLOW_POLL_SECONDS)
    await asyncio.sleep(0.2)  # let it go idle first
    character = await create_character(graphql, alice)

    # when a job is queued
    job = await generate_portrait(graphql, alice, characterId=character["id"])

    # then the worker runs it straight away
    done = await wait_for_job(graphql, alice, job["id"], status="COMPLETED")
    assert done["attempts"] == 1


async def test_the_worker_listens_again_after_its_connection_is_killed(
    graphql: GraphQL, pool: asyncpg.Pool, start_generation: Callable[..., Awaitable[Any]], alice: uuid.UUID
) -> None:
    # given an idle worker whose LISTEN connection the server terminates
    await start_generation("local", poll_seconds=SLOW_POLL_SECONDS)
    before = await listening_backends(pool)
    assert len(before) == 1
    await pool.execute("SELECT pg_terminate_backend($1)", before[0])
    for _ in range(250):
        after = await listening_backends(pool)
        if after and after != before:
            break
        await asyncio.sleep(0.02)
    assert after and after != before, "the worker never listened again"

    # when a job is queued afterwards
    character = await create_character(graphql, alice)
    job = await generate_portrait(graphql, alice, characterId=character["id"])

    # then the new connection wakes the worker
    done = await wait_for_job(graphql, alice, job["id"], status="COMPLETED")
    assert done["status"] == "COMPLETED"


def test_backoff_doubles_per_attempt_within_jitter_and_is_capped() -> None:
    # given a base of 2 s and a cap of 60 s, when each attempt's delay is drawn many times
    for attempt, expected in ((1, 2.0), (2, 4.0), (3, 8.0), (10, 60.0)):
        delays = [backoff_seconds(attempt, base=2.0, maximum=60.0) for _ in range(200)]
        # then every draw lies within +-20 % of base * 2^(attempt-1), capped
        assert all(0.8 * expected <= delay <= 1.2 * expected for delay in delays)
        assert max(delays) - min(delays) > 0  # jittered, so a burst of retries spreads out
