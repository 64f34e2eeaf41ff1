"""Jobs say who ran them: job_attempts, jobs.worker_id, and Job.attemptHistory for the owner only.

Real workers on the test database (the fake fal over HTTP for failures); the
SIGKILLed worker whose attempt is closed as abandoned is in tests/test_worker_crash.py.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import graphql as graphql_core
import pytest
from strawberry.printer import print_schema

from graph.schema import schema
from resolvers.jobs import load_job_attempts
from resolvers.viewer import Viewer
from server.settings import Settings
from storage import job_attempts
from storage.enums import JobAttemptOutcome
from storage.errors import IntegrityViolation
from tests.conftest import StartGeneration, graphql_logging_statements
from tests.fake_fal import FakeFal
from tests.generation_support import (
    CANCEL,
    FAL_MODEL,
    GENERATE_IMAGE,
    WAIT_SECONDS,
    GraphQL,
    create_character,
    generate_portrait,
    get_job,
    wait_for_job,
)
from tests.support import error_codes

ATTEMPT_FIELDS = {"number", "startedAt", "finishedAt", "outcome", "retryable", "error"}


# --- helpers -------------------------------------------------------------------------


async def attempts_of(pool: asyncpg.Pool, job_id: str) -> list[asyncpg.Record]:
    """The job's rows in job_attempts, oldest first."""
    return list(await pool.fetch("SELECT * FROM job_attempts WHERE job_id = $1 ORDER BY number", uuid.UUID(job_id)))


async def finished_by(pool: asyncpg.Pool, job_id: str) -> str | None:
    value: str | None = await pool.fetchval("SELECT worker_id FROM jobs WHERE id = $1", uuid.UUID(job_id))
    return value


async def assert_history_agrees_with_the_jobs(pool: asyncpg.Pool) -> None:
    """A job holds a lease exactly when it has a running attempt, and that attempt's token is the lease."""
    disagreeing = await pool.fetch(
        """
        SELECT j.id, j.status, j.locked_by, a.lease_token FROM jobs j
        LEFT JOIN job_attempts a ON a.job_id = j.id AND a.outcome = 'running'
        WHERE j.locked_by IS DISTINCT FROM a.lease_token
        """
    )
    assert [dict(row) for row in disagreeing] == []


async def fal_model_id(graphql: GraphQL) -> str:
    body = await graphql("{ imageModels { id modelKey } }")
    assert "errors" not in body, body
    (model,) = [model for model in body["data"]["imageModels"] if model["modelKey"] == FAL_MODEL]
    return str(model["id"])


async def generate_image(graphql: GraphQL, user: uuid.UUID, prompt: str, model_id: str | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {"prompt": prompt}
    if model_id is not None:
        fields["modelId"] = model_id
    body = await graphql(GENERATE_IMAGE, {"input": fields}, user=user)
    assert "errors" not in body, body
    job: dict[str, Any] = body["data"]["generateImage"]
    return job


async def eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fails after WAIT_SECONDS."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


def shown(history: list[dict[str, Any]]) -> list[tuple[int, str, bool | None]]:
    return [(attempt["number"], attempt["outcome"], attempt["retryable"]) for attempt in history]


# --- who ran it ------------------------------------------------------------------------------


async def test_a_completed_job_keeps_the_worker_that_finished_it_and_one_completed_attempt(
    graphql: GraphQL, start_generation: StartGeneration, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a worker in this process
    generation = await start_generation("local")
    (worker,) = generation.workers

    # when a portrait is generated
    character = await create_character(graphql, alice)
    job = await generate_portrait(graphql, alice, characterId=character["id"], seed=5)
    done = await wait_for_job(graphql, alice, job["id"])
    assert done["status"] == "COMPLETED", done

    # then the job row keeps who finished it, though its lease is cleared
    row = await pool.fetchrow("SELECT locked_by, worker_id FROM jobs WHERE id = $1", uuid.UUID(job["id"]))
    assert row is not None and row["locked_by"] is None and row["worker_id"] == worker.name
    # and that worker is named after this host and process
    host, pid, suffix = worker.name.split(":")
    assert (host, int(pid)) == (socket.gethostname(), os.getpid()) and len(suffix) == 6

    # and the history has one completed attempt by it
    (attempt,) = await attempts_of(pool, job["id"])
    assert (attempt["number"], attempt["outcome"], attempt["worker_id"]) == (1, "completed", worker.name)
    assert (attempt["host"], attempt["pid"]) == (socket.gethostname(), os.getpid())
    assert attempt["lease_token"].startswith(worker.name + "/")
    assert attempt["error"] is None and attempt["retryable"] is None
    assert attempt["started_at"] <= attempt["finished_at"]

    # and the owner reads the same attempt, with its times
    (seen,) = done["attemptHistory"]
    assert set(seen) == ATTEMPT_FIELDS
    assert shown(done["attemptHistory"]) == [(1, "COMPLETED", None)] and seen["error"] is None
    assert datetime.fromisoformat(seen["startedAt"]) == attempt["started_at"]
    assert datetime.fromisoformat(seen["finishedAt"]) == attempt["finished_at"]
    await assert_history_agrees_with_the_jobs(pool)


async def test_a_retried_job_records_each_attempt_with_its_outcome_and_error(
    graphql: GraphQL, start_generation: StartGeneration, fake_fal_server: FakeFal, pool: asyncpg.Pool,
    alice: uuid.UUID,
) -> None:
    # given fal refuses the first two submits with a 500
    model_id = await fal_model_id(graphql)
    generation = await start_generation()
    fake_fal_server.behave(submit_status=500, submit_errors=2)

    # when an image is generated on the fal model
    job = await generate_image(graphql, alice, "a lighthouse in a storm", model_id)
    done = await wait_for_job(graphql, alice, job["id"])

    # then the third attempt completed
    assert done["status"] == "COMPLETED" and done["attempts"] == 3 and done["error"] is None, done
    # and each attempt is recorded, in order, with how it ended and why
    assert shown(done["attemptHistory"]) == [(1, "FAILED", True), (2, "FAILED", True), (3, "COMPLETED", None)]
    first, second, third = done["attemptHistory"]
    for failed in (first, second):
        assert "fal answered 500" in failed["error"] and "submit refused by the fake" in failed["error"]
    assert third["error"] is None
    # and each one ended before the next began
    rows = await attempts_of(pool, job["id"])
    for earlier, later in itertools.pairwise(rows):
        assert earlier["finished_at"] <= later["started_at"]
    # and all of them ran on the one worker there is, which the job keeps
    (worker,) = generation.workers
    assert {row["worker_id"] for row in rows} == {worker.name} == {await finished_by(pool, job["id"])}
    await assert_history_agrees_with_the_jobs(pool)


async def test_a_job_that_keeps_failing_records_each_failure_by_itself(
    graphql: GraphQL, start_generation: StartGeneration, fake_fal_server: FakeFal, pool: asyncpg.Pool,
    alice: uuid.UUID,
) -> None:
    # given fal refuses every submit
    model_id = await fal_model_id(graphql)
    await start_generation()
    fake_fal_server.behave(submit_status=500, submit_errors=None)

    # when an image is generated on the fal model
    job = await generate_image(graphql, alice, "a harbour that never renders", model_id)
    done = await wait_for_job(graphql, alice, job["id"])

    # then the job failed after three attempts, saying so
    assert done["status"] == "FAILED" and done["error"].startswith("failed after 3 attempts: "), done
    # and each attempt says its own error, without the job's summary
    assert shown(done["attemptHistory"]) == [(n, "FAILED", True) for n in (1, 2, 3)]
    assert {attempt["error"] for attempt in done["attemptHistory"]} == {
        done["error"].removeprefix("failed after 3 attempts: ")
    }
    await assert_history_agrees_with_the_jobs(pool)


async def test_a_non_retryable_failure_is_one_failed_attempt_said_not_retryable(
    graphql: GraphQL, start_generation: StartGeneration, fake_fal_server: FakeFal, pool: asyncpg.Pool,
    alice: uuid.UUID,
) -> None:
    # given fal runs the request but its result has no image
    model_id = await fal_model_id(graphql)
    await start_generation()
    fake_fal_server.behave(result="no_images")

    # when an image is generated on the fal model
    job = await generate_image(graphql, alice, "a quiet harbour at dawn", model_id)
    done = await wait_for_job(graphql, alice, job["id"])

    # then one failed attempt, not retryable, with the job's own error
    assert done["status"] == "FAILED" and done["attempts"] == 1, done
    assert shown(done["attemptHistory"]) == [(1, "FAILED", False)]
    assert done["attemptHistory"][0]["error"] == done["error"]
    await assert_history_agrees_with_the_jobs(pool)


async def test_canceling_a_running_job_closes_its_attempt_as_canceled(
    graphql: GraphQL, start_generation: StartGeneration, fake_fal_server: FakeFal, pool: asyncpg.Pool,
    alice: uuid.UUID,
) -> None:
    # given a fal request that never finishes, and a worker running it
    model_id = await fal_model_id(graphql)
    fake_fal_server.behave(polls_before_done=10_000)
    generation = await start_generation()
    job = await generate_image(graphql, alice, "an endless render", model_id)

    async def running() -> bool:
        return [row["outcome"] for row in await attempts_of(pool, job["id"])] == ["running"]

    await eventually(running, "the attempt runs")

    # when alice cancels it
    body = await graphql(CANCEL, {"id": job["id"]}, user=alice)
    assert "errors" not in body and body["data"]["cancelJob"]["status"] == "CANCELED", body

    # then its attempt was closed by the cancel itself, before the worker heard of it
    (attempt,) = await attempts_of(pool, job["id"])
    assert (attempt["outcome"], attempt["error"]) == ("canceled", "canceled by the user")
    assert attempt["finished_at"] is not None
    # and it stays canceled once the worker has let the job go (not "lease lost")
    await eventually(
        lambda: _value(not any(worker.running_jobs for worker in generation.workers)), "the worker let go"
    )
    seen = await get_job(graphql, alice, job["id"])
    assert shown(seen["attemptHistory"]) == [(1, "CANCELED", None)]
    assert seen["attemptHistory"][0]["error"] == "canceled by the user"
    await assert_history_agrees_with_the_jobs(pool)


async def _value(value: Any) -> Any:
    return value


async def test_a_worker_that_outlived_its_lease_is_recorded_as_having_lost_it(
    graphql: GraphQL, start_generation: StartGeneration, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a slow worker (one job at a time, two seconds a render) running a job
    slow = (await start_generation("local", concurrency=1, lease_seconds=30, local_latency=2.0)).workers[0]
    job = await generate_image(graphql, alice, "a slow render")

    async def claimed() -> bool:
        return len(await attempts_of(pool, job["id"])) == 1

    await eventually(claimed, "the slow worker claims the job")
    # and its lease runs out while it renders, as when its renewals cannot reach the database
    await pool.execute("UPDATE jobs SET locked_until = now() - interval '1 second' WHERE id = $1", uuid.UUID(job["id"]))

    # when another worker takes the job over and finishes it
    fast = (await start_generation("local", poll_seconds=0.2)).workers[0]
    done = await wait_for_job(graphql, alice, job["id"])
    assert done["status"] == "COMPLETED" and done["attempts"] == 2, done

    # then the slow worker, finding its lease gone, records that it was alive: lease lost, not abandoned
    async def lost() -> list[asyncpg.Record] | None:
        rows = await attempts_of(pool, job["id"])
        return rows if rows[0]["outcome"] == "lease_lost" else None

    first, second = await eventually(lost, "the slow worker records its lost lease")
    assert (first["worker_id"], second["worker_id"]) == (slow.name, fast.name)
    assert (second["number"], second["outcome"]) == (2, "completed")
    # and its attempt ends when it stopped, after the takeover: the overlap of a double run shows
    assert first["finished_at"] > second["started_at"]
    assert first["error"] is not None and "lease" in first["error"]
    # and the job keeps the worker that finished it
    assert await finished_by(pool, job["id"]) == fast.name
    seen = await get_job(graphql, alice, job["id"])
    assert shown(seen["attemptHistory"]) == [(1, "LEASE_LOST", None), (2, "COMPLETED", None)]
    await assert_history_agrees_with_the_jobs(pool)


async def test_a_job_handed_back_by_a_stopping_worker_keeps_that_attempt_as_released(
    graphql: GraphQL, start_generation: StartGeneration, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a worker running a long render, which gives running jobs no grace when it stops
    stopping = await start_generation("local", local_latency=60.0, shutdown_grace_seconds=0.1)
    job = await generate_image(graphql, alice, "a render cut short")

    async def claimed() -> bool:
        return len(await attempts_of(pool, job["id"])) == 1

    # (the stop may come while the claim commits: the worker must still see the job it claimed)
    await eventually(claimed, "the worker claims the job")

    # when the worker stops
    await stopping.stop()

    # then the job is back in the queue, the attempt not counted, and the attempt says it was handed back
    queued = await get_job(graphql, alice, job["id"])
    assert queued["status"] == "QUEUED" and queued["attempts"] == 0, queued
    assert shown(queued["attemptHistory"]) == [(1, "RELEASED", None)]
    await assert_history_agrees_with_the_jobs(pool)

    # when another worker runs it
    await start_generation("local")
    done = await wait_for_job(graphql, alice, job["id"])

    # then it completes as attempt 2 of its history, its first counted attempt
    assert done["status"] == "COMPLETED" and done["attempts"] == 1, done
    assert shown(done["attemptHistory"]) == [(1, "RELEASED", None), (2, "COMPLETED", None)]
    await assert_history_agrees_with_the_jobs(pool)


# --- who may see it --------------------------------------------------------------------------


async def test_the_owner_sees_the_attempt_history_and_another_user_sees_nothing_of_it(
    graphql: GraphQL, start_generation: StartGeneration, pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID,
    settings: Settings,
) -> None:
    # given alice's completed job
    await start_generation("local")
    job = await generate_image(graphql, alice, "alice's harbour")
    done = await wait_for_job(graphql, alice, job["id"])
    assert shown(done["attemptHistory"]) == [(1, "COMPLETED", None)]
    query = "query($id: ID!) { job(id: $id) { id attemptHistory { number outcome error } } }"

    # when bob asks for its history
    body = await graphql(query, {"id": job["id"]}, user=bob)
    # then he is told it does not exist, and given nothing
    assert error_codes(body) == ["NOT_FOUND"] and body["data"] == {"job": None}, body
    # and his own job list shows none of it
    listed = await graphql("{ jobs(first: 50) { edges { node { id attemptHistory { number } } } } }", user=bob)
    assert listed == {"data": {"jobs": {"edges": []}}}
    # and the loader behind the field gives him no attempt of hers, even asked by id
    expires = datetime.now(UTC) + timedelta(hours=1)
    job_id = uuid.UUID(job["id"])
    assert await load_job_attempts(pool, Viewer(bob, expires), [job_id]) == [[]]
    (alices,) = await load_job_attempts(pool, Viewer(alice, expires), [job_id])
    assert [attempt.outcome for attempt in alices] == [JobAttemptOutcome.COMPLETED]


async def test_the_attempt_histories_of_a_page_of_jobs_are_one_query(
    settings: Settings, graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given ten of alice's jobs with two attempts each (a failure, then a success)
    for index in range(10):
        job = await generate_image(graphql, alice, f"scene {index}")
        async with pool.acquire() as connection:
            for number, (outcome, error) in enumerate(
                [(JobAttemptOutcome.FAILED, "it broke"), (JobAttemptOutcome.COMPLETED, None)], start=1
            ):
                token = f"host:1:abcdef/{index}-{number}"
                await job_attempts.start(
                    connection, job_id=uuid.UUID(job["id"]), lease_token=token, worker_id="host:1:abcdef",
                    host="host", pid=1,
                )
                await job_attempts.finish(
                    connection, job_id=uuid.UUID(job["id"]), lease_token=token, outcome=outcome, error=error,
                    retryable=True if outcome is JobAttemptOutcome.FAILED else None,
                )
    # and an app that logs every statement it runs
    async with graphql_logging_statements(settings) as (logged, statements):
        statements.clear()
        # when the page is read with each job's history
        body = await logged(
            "{ jobs(first: 10) { edges { node { id attemptHistory { number outcome retryable error } } } } }",
            user=alice,
        )
    # then every job shows both attempts
    assert "errors" not in body, body
    histories = [edge["node"]["attemptHistory"] for edge in body["data"]["jobs"]["edges"]]
    assert len(histories) == 10
    assert all(shown(history) == [(1, "FAILED", True), (2, "COMPLETED", None)] for history in histories)
    # and the histories took one statement, not one per job
    assert len([statement for statement in statements if "job_attempts" in statement]) == 1


def test_no_worker_id_host_or_process_appears_in_the_graphql_schema() -> None:
    # given the schema as clients see it
    built = graphql_core.build_schema(print_schema(schema))

    # when every field and argument name of every type is listed
    names = {
        name.lower()
        for graphql_type in built.type_map.values()
        if isinstance(graphql_type, (graphql_core.GraphQLObjectType, graphql_core.GraphQLInputObjectType))
        for field_name, field in graphql_type.fields.items()
        for name in [field_name, *getattr(field, "args", {})]
    }

    # then none names a worker, a host, a process or a lease
    assert names, "no fields found"
    forbidden = ("worker", "host", "pid", "lease", "lockedby", "finishedby")
    assert [name for name in names if any(word in name for word in forbidden)] == []
    # and an attempt shows exactly its number, times, outcome, whether it could retry, and its error
    attempt = built.type_map["JobAttempt"]
    assert isinstance(attempt, graphql_core.GraphQLObjectType)
    assert set(attempt.fields) == ATTEMPT_FIELDS


# --- storage ---------------------------------------------------------------------------------


async def test_a_job_has_at_most_one_running_attempt(graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID) -> None:
    # given a queued job with a running attempt
    job_id = uuid.UUID((await generate_image(graphql, alice, "one at a time"))["id"])
    async with pool.acquire() as connection:
        await job_attempts.start(connection, job_id=job_id, lease_token="a:1:x/1", worker_id="a:1:x", host="a", pid=1)

        # when another attempt is opened without closing it
        # then the database refuses it
        with pytest.raises(IntegrityViolation) as refused:
            await job_attempts.start(
                connection, job_id=job_id, lease_token="b:2:y/1", worker_id="b:2:y", host="b", pid=2
            )
        assert refused.value.constraint == "job_attempts_one_running_idx"

        # when it is closed as abandoned first, as a claim does
        closed = await job_attempts.close_running(
            connection, job_id=job_id, outcome=JobAttemptOutcome.ABANDONED, error="gone"
        )
        second = await job_attempts.start(
            connection, job_id=job_id, lease_token="b:2:y/1", worker_id="b:2:y", host="b", pid=2
        )
    # then the second attempt opens, numbered after the first
    assert [(attempt.number, attempt.outcome) for attempt in closed] == [(1, JobAttemptOutcome.ABANDONED)]
    assert (second.number, second.outcome, second.finished_at) == (2, JobAttemptOutcome.RUNNING, None)


async def test_operators_count_attempts_per_worker_and_outcome(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given attempts by two workers: a completes two jobs; b fails one and is still running another
    since = datetime.now(UTC) - timedelta(seconds=1)
    plan = [
        ("a", JobAttemptOutcome.COMPLETED),
        ("a", JobAttemptOutcome.COMPLETED),
        ("b", JobAttemptOutcome.FAILED),
        ("b", JobAttemptOutcome.RUNNING),
    ]
    async with pool.acquire() as connection:
        for index, (worker, outcome) in enumerate(plan):
            job_id = uuid.UUID((await generate_image(graphql, alice, f"job {index}"))["id"])
            token = f"{worker}:1:x/{index}"
            await job_attempts.start(
                connection, job_id=job_id, lease_token=token, worker_id=f"{worker}:1:x", host=worker, pid=1
            )
            if outcome is not JobAttemptOutcome.RUNNING:
                await job_attempts.finish(
                    connection, job_id=job_id, lease_token=token, outcome=outcome,
                    retryable=False if outcome is JobAttemptOutcome.FAILED else None,
                )

        # when an operator asks what each worker did since a moment ago, and since now
        recent = await job_attempts.outcomes_by_worker(connection, since=since)
        later = await job_attempts.outcomes_by_worker(connection, since=datetime.now(UTC) + timedelta(seconds=1))

    # then each worker's attempts are counted by outcome, on its host
    assert [(row.worker_id, row.host, row.outcome, row.attempts) for row in recent] == [
        ("a:1:x", "a", JobAttemptOutcome.COMPLETED, 2),
        ("b:1:x", "b", JobAttemptOutcome.FAILED, 1),
        ("b:1:x", "b", JobAttemptOutcome.RUNNING, 1),
    ]
    assert all(row.total_seconds >= 0 for row in recent)
    # and nothing started after the moment asked about is counted
    assert later == []
