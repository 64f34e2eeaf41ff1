"""The ``job_attempts`` table: each claim of a job by a worker, and how it ended.

Rows are opened in the transaction that claims the job and closed in the one
that finishes the attempt, so the history never disagrees with the job row.
A worker closes only its own attempt (fenced by its lease token); a claim
closes a running attempt whose lease ran out as ``abandoned``. Worker ids,
hosts and pids are for operators; the job's owner reads the rest through
``list_for_jobs``, filtered by the owner.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from storage.database import Connection, Executor, returned
from storage.enums import JobAttemptOutcome
from storage.errors import translate_errors


@dataclass(frozen=True, slots=True)
class JobAttempt:
    job_id: UUID
    number: int
    lease_token: str
    worker_id: str
    host: str
    pid: int
    started_at: datetime
    finished_at: datetime | None
    outcome: JobAttemptOutcome
    retryable: bool | None
    error: str | None


@dataclass(frozen=True, slots=True)
class WorkerOutcomes:
    """What one worker's attempts came to since a time: the operators' figures (issue 14's metrics)."""

    worker_id: str
    host: str
    outcome: JobAttemptOutcome
    attempts: int
    # Of the finished ones; 0.0 for running attempts.
    total_seconds: float


COLUMNS = """a.job_id, a.number, a.lease_token, a.worker_id, a.host, a.pid, a.started_at, a.finished_at, a.outcome,
    a.retryable, a.error"""


def _attempt(row: asyncpg.Record) -> JobAttempt:
    return JobAttempt(
        job_id=row["job_id"],
        number=row["number"],
        lease_token=row["lease_token"],
        worker_id=row["worker_id"],
        host=row["host"],
        pid=row["pid"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        outcome=JobAttemptOutcome(row["outcome"]),
        retryable=row["retryable"],
        error=row["error"],
    )


# --- the worker's side (and a cancel's) ----------------------------------------------

# Numbered after every attempt the job had; the claim's row lock on the job
# keeps two claims of one job from picking the same number.
START = f"""
INSERT INTO job_attempts AS a (job_id, number, lease_token, worker_id, host, pid)
SELECT $1, coalesce(max(number), 0) + 1, $2, $3, $4, $5 FROM job_attempts WHERE job_id = $1
RETURNING {COLUMNS}
"""


@translate_errors
async def start(
    connection: Connection, *, job_id: UUID, lease_token: str, worker_id: str, host: str, pid: int
) -> JobAttempt:
    """Open the attempt of a claim, in the claim's transaction (after ``close_running``)."""
    row = await connection.fetchrow(START, job_id, lease_token, worker_id, host, pid)
    return _attempt(returned(row))


CLOSE_RUNNING = f"""
UPDATE job_attempts AS a SET outcome = $2, finished_at = now(), error = $3
WHERE a.job_id = $1 AND a.outcome = 'running'
RETURNING {COLUMNS}
"""


@translate_errors
async def close_running(
    connection: Connection, *, job_id: UUID, outcome: JobAttemptOutcome, error: str
) -> list[JobAttempt]:
    """Close whatever attempt of the job still runs, in the transaction that took the job from its worker.

    A claim taking over an expired lease closes it ``abandoned``; a cancel, ``canceled``.
    """
    return [_attempt(row) for row in await connection.fetch(CLOSE_RUNNING, job_id, outcome, error)]


FINISH = """
UPDATE job_attempts SET outcome = $3, finished_at = now(), retryable = $4, error = $5
WHERE job_id = $1 AND lease_token = $2 AND outcome = 'running'
RETURNING number
"""


@translate_errors
async def finish(
    connection: Connection,
    *,
    job_id: UUID,
    lease_token: str,
    outcome: JobAttemptOutcome,
    error: str | None = None,
    retryable: bool | None = None,
) -> bool:
    """Close this worker's own attempt, in the transaction whose fenced job write ended it; False if not open."""
    return await connection.fetchval(FINISH, job_id, lease_token, outcome, retryable, error) is not None


MARK_LEASE_LOST = """
UPDATE job_attempts SET outcome = 'lease_lost', finished_at = now(), error = $2
WHERE lease_token = $1 AND outcome IN ('running', 'abandoned')
RETURNING number
"""


@translate_errors
async def mark_lease_lost(connection: Executor, *, lease_token: str, error: str) -> bool:
    """A worker that finds its lease gone says it was alive: its abandoned attempt becomes ``lease_lost``.

    Fenced by the attempt's own token and touching no job row, it is safe after
    the job moved on; ``finished_at`` becomes when the worker stopped, so an
    overlap with the next attempt shows. A canceled attempt stays canceled.
    """
    return await connection.fetchval(MARK_LEASE_LOST, lease_token, error) is not None


# --- the owner's side ---------------------------------------------------------------

LIST_FOR_JOBS = f"""
SELECT {COLUMNS} FROM job_attempts a JOIN jobs j ON j.id = a.job_id
WHERE a.job_id = ANY($1::uuid[]) AND j.user_id = $2
ORDER BY a.job_id, a.number
"""


@translate_errors
async def list_for_jobs(connection: Executor, *, user_id: UUID, job_ids: Collection[UUID]) -> list[JobAttempt]:
    """The attempts of the user's jobs among ``job_ids``, each job's oldest first."""
    return [_attempt(row) for row in await connection.fetch(LIST_FOR_JOBS, [*job_ids], user_id)]


# --- the operators' side ------------------------------------------------------------

LIST_FOR_JOB = f"SELECT {COLUMNS} FROM job_attempts a WHERE a.job_id = $1 ORDER BY a.number"


@translate_errors
async def list_for_job(connection: Executor, *, job_id: UUID) -> list[JobAttempt]:
    """Every attempt of a job, whoever owns it, oldest first (operators' audit)."""
    return [_attempt(row) for row in await connection.fetch(LIST_FOR_JOB, job_id)]


OUTCOMES_BY_WORKER = """
SELECT worker_id, host, outcome, count(*) AS attempts,
    coalesce(sum(extract(epoch FROM finished_at - started_at)), 0)::float8 AS total_seconds
FROM job_attempts
WHERE started_at >= $1
GROUP BY worker_id, host, outcome
ORDER BY worker_id, outcome
"""


@translate_errors
async def outcomes_by_worker(connection: Executor, *, since: datetime) -> list[WorkerOutcomes]:
    """Attempts started since ``since``, counted per worker and outcome, with their time spent."""
    return [
        WorkerOutcomes(
            worker_id=row["worker_id"],
            host=row["host"],
            outcome=JobAttemptOutcome(row["outcome"]),
            attempts=row["attempts"],
            total_seconds=row["total_seconds"],
        )
        for row in await connection.fetch(OUTCOMES_BY_WORKER, since)
    ]
