"""The ``jobs`` table: generation requests, and the queue workers claim them from.

Client-facing queries filter by the owner's user id. Worker-facing ones are
fenced by the lease token a claim wrote into ``locked_by``: a worker whose
lease ran out (and whose job another worker claimed) changes nothing.
``worker_id`` keeps who ran the latest attempt after the lease is cleared;
each attempt is in ``job_attempts`` (storage/job_attempts.py), written in the
same transactions as the claim and the finishing write here.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict
from uuid import UUID

import asyncpg

from storage.database import Connection, Executor, returned
from storage.enums import JobDestination, JobStatus, Provider, ProviderStatus, Quality, provider_status
from storage.errors import translate_errors


class JobMetadata(TypedDict, total=False):
    """jobs.metadata (jsonb) as resolvers/jobs.py writes it; enums are stored as their strings."""

    destination: str
    # A character portrait's, also for a draft (character_id null until createCharacter attaches one).
    character_id: str | None
    character_name: str
    consistency_method: str
    content_rating: str
    draft: bool
    # A scene's (generateImage with characterId): the character whose reference image it was given.
    scene_character_id: str


@dataclass(frozen=True, slots=True)
class Job:
    id: UUID
    user_id: UUID
    status: JobStatus
    destination: JobDestination
    character_id: UUID | None
    model_key: str
    prompt: str
    quality: Quality
    seed: int | None
    metadata: JobMetadata
    attempts: int
    max_attempts: int
    run_after: datetime
    locked_by: str | None
    locked_until: datetime | None
    # The worker of the latest attempt, kept after its lease ends: who finished a finished job. Operators only.
    worker_id: str | None
    provider_request_id: str | None
    provider_status: ProviderStatus | None
    queue_position: int | None
    result_url: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    # The reference image the job was given ("bucket/path"), the library asset at that path, and the
    # character's locked seed the job took; all None for a job without a reference.
    reference_image_key: str | None = None
    reference_asset_id: UUID | None = None
    reference_seed: int | None = None
    # From a provider whose logs show them (Replicate): its last progress bar's percent (0-100), its last log line.
    provider_percent: int | None = None
    provider_message: str | None = None

    @property
    def sort_key(self) -> tuple[datetime, UUID]:
        return (self.created_at, self.id)

    @property
    def is_draft(self) -> bool:
        """A portrait generated before its character exists (createCharacter attaches it later)."""
        return self.destination is JobDestination.CHARACTER_PORTRAIT and bool(self.metadata.get("draft"))


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    job: Job
    # image_models.provider of the job's model: which provider runs it.
    provider: Provider
    # The claim's now(), on the database's clock as run_after is: how long the job waited once due.
    claimed_at: datetime


COLUMNS = """j.id, j.user_id, j.status, j.destination, j.character_id, j.model_key, j.prompt, j.quality, j.seed,
    j.metadata, j.attempts, j.max_attempts, j.run_after, j.locked_by, j.locked_until, j.worker_id,
    j.provider_request_id, j.provider_status, j.queue_position, j.result_url, j.error, j.created_at, j.started_at,
    j.completed_at, j.updated_at, j.reference_image_key, j.reference_asset_id, j.reference_seed, j.provider_percent,
    j.provider_message"""


def _job(row: asyncpg.Record) -> Job:
    return Job(
        id=row["id"],
        user_id=row["user_id"],
        status=JobStatus(row["status"]),
        destination=JobDestination(row["destination"]),
        character_id=row["character_id"],
        model_key=row["model_key"],
        prompt=row["prompt"],
        quality=Quality(row["quality"]),
        seed=row["seed"],
        metadata=row["metadata"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        run_after=row["run_after"],
        locked_by=row["locked_by"],
        locked_until=row["locked_until"],
        worker_id=row["worker_id"],
        provider_request_id=row["provider_request_id"],
        provider_status=None if row["provider_status"] is None else provider_status(row["provider_status"]),
        queue_position=row["queue_position"],
        result_url=row["result_url"],
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        updated_at=row["updated_at"],
        reference_image_key=row["reference_image_key"],
        reference_asset_id=row["reference_asset_id"],
        reference_seed=row["reference_seed"],
        provider_percent=row["provider_percent"],
        provider_message=row["provider_message"],
    )


GET = f"SELECT {COLUMNS} FROM jobs j WHERE j.id = $1 AND j.user_id = $2"


@translate_errors
async def get(connection: Executor, *, user_id: UUID, job_id: UUID) -> Job | None:
    """One of the user's jobs, or None."""
    row = await connection.fetchrow(GET, job_id, user_id)
    return None if row is None else _job(row)


GET_FOR_UPDATE = f"SELECT {COLUMNS} FROM jobs j WHERE j.id = $1 AND j.user_id = $2 FOR UPDATE"


@translate_errors
async def get_for_update(connection: Connection, *, user_id: UUID, job_id: UUID) -> Job | None:
    """One of the user's jobs, row-locked until the transaction ends (so no worker step interleaves)."""
    row = await connection.fetchrow(GET_FOR_UPDATE, job_id, user_id)
    return None if row is None else _job(row)


GET_MANY = f"SELECT {COLUMNS} FROM jobs j WHERE j.id = ANY($1::uuid[]) AND j.user_id = $2"


@translate_errors
async def get_many(connection: Connection, *, user_id: UUID, job_ids: Collection[UUID]) -> list[Job]:
    """The user's jobs among ``job_ids``, in no particular order."""
    return [_job(row) for row in await connection.fetch(GET_MANY, [*job_ids], user_id)]


# $3 is NULL for every status; one statement either way.
LIST_FIRST = f"""
SELECT {COLUMNS} FROM jobs j
WHERE j.user_id = $1 AND ($3::text IS NULL OR j.status = $3)
ORDER BY j.created_at DESC, j.id DESC
LIMIT $2
"""
LIST_AFTER = f"""
SELECT {COLUMNS} FROM jobs j
WHERE j.user_id = $1 AND ($3::text IS NULL OR j.status = $3) AND (j.created_at, j.id) < ($4, $5)
ORDER BY j.created_at DESC, j.id DESC
LIMIT $2
"""


@translate_errors
async def list_page(
    connection: Connection,
    *,
    user_id: UUID,
    limit: int,
    after: tuple[datetime, UUID] | None = None,
    status: JobStatus | None = None,
) -> list[Job]:
    """The user's jobs, newest first, optionally of one status."""
    if after is None:
        rows = await connection.fetch(LIST_FIRST, user_id, limit, status)
    else:
        rows = await connection.fetch(LIST_AFTER, user_id, limit, status, after[0], after[1])
    return [_job(row) for row in rows]


COUNT = "SELECT count(*) FROM jobs j WHERE j.user_id = $1 AND ($2::text IS NULL OR j.status = $2)"


@translate_errors
async def count(connection: Connection, *, user_id: UUID, status: JobStatus | None = None) -> int:
    """How many jobs the user has, optionally of one status (a connection's totalCount)."""
    total: int = await connection.fetchval(COUNT, user_id, status)
    return total


LIST_CHANGED_SINCE = f"""
SELECT {COLUMNS} FROM jobs j
WHERE j.user_id = $1 AND j.updated_at >= $2 AND j.destination = $3
ORDER BY j.updated_at DESC
LIMIT $4
"""


@translate_errors
async def list_changed_since(
    connection: Connection, *, user_id: UUID, since: datetime, destination: JobDestination, limit: int
) -> list[Job]:
    """The user's jobs of ``destination`` updated at or after ``since``, most recent first (a subscription's resync)."""
    return [_job(row) for row in await connection.fetch(LIST_CHANGED_SINCE, user_id, since, destination, limit)]


# Serialises job creation per user, so two concurrent requests cannot both
# pass the cap. Transaction-scoped: released at commit or rollback.
LOCK_USER = "SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text, 0))"
COUNT_ACTIVE = "SELECT count(*) FROM jobs WHERE user_id = $1 AND status IN ('queued', 'processing')"


@translate_errors
async def count_active(connection: Connection, *, user_id: UUID) -> int:
    """Queued plus running jobs of the user, counted under a per-user lock held until commit."""
    await connection.execute(LOCK_USER, user_id)
    count: int = await connection.fetchval(COUNT_ACTIVE, user_id)
    return count


CREATE = f"""
INSERT INTO jobs AS j (user_id, destination, character_id, model_key, prompt, quality, seed, metadata, max_attempts,
    reference_image_key, reference_asset_id, reference_seed)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
RETURNING {COLUMNS}
"""


@dataclass(frozen=True, slots=True)
class JobReference:
    """The reference image a new job is given: its "bucket/path", its library asset, the locked seed taken."""

    image_key: str
    asset_id: UUID | None = None
    seed: int | None = None


@translate_errors
async def create(
    connection: Connection,
    *,
    user_id: UUID,
    destination: JobDestination,
    character_id: UUID | None,
    model_key: str,
    prompt: str,
    quality: Quality,
    seed: int | None,
    metadata: JobMetadata,
    max_attempts: int,
    reference: JobReference | None = None,
) -> Job:
    """Insert a queued job; its insert trigger wakes the workers at commit."""
    row = await connection.fetchrow(
        CREATE, user_id, destination, character_id, model_key, prompt, quality, seed, dict(metadata), max_attempts,
        None if reference is None else reference.image_key,
        None if reference is None else reference.asset_id,
        None if reference is None else reference.seed,
    )
    return _job(returned(row))


# A canceled job's error, and its running attempt's (job_attempts).
CANCELED_ERROR = "canceled by the user"

CANCEL = f"""
UPDATE jobs AS j SET status = 'canceled', completed_at = now(), locked_by = NULL, locked_until = NULL, error = $3
WHERE j.id = $1 AND j.user_id = $2 AND j.status IN ('queued', 'processing')
RETURNING {COLUMNS}
"""


@translate_errors
async def cancel(connection: Connection, *, user_id: UUID, job_id: UUID) -> Job | None:
    """Cancel an active job; None when it is not the user's or already finished.

    A running job's attempt is closed by ``job_attempts.close_running`` in the same transaction.
    """
    row = await connection.fetchrow(CANCEL, job_id, user_id, CANCELED_ERROR)
    return None if row is None else _job(row)


ATTACH_CHARACTER = f"""
UPDATE jobs AS j SET character_id = $3::uuid,
    metadata = j.metadata || jsonb_build_object('character_id', $3::uuid::text, 'character_name', $4::text),
    -- A draft that already finished goes back to the queue for its library save
    -- (the worker skips the generation it already has); a running one just carries on.
    status = CASE WHEN j.status = 'completed' THEN 'queued' ELSE j.status END,
    attempts = CASE WHEN j.status = 'completed' THEN 0 ELSE j.attempts END,
    run_after = CASE WHEN j.status = 'completed' THEN now() ELSE j.run_after END,
    completed_at = CASE WHEN j.status = 'completed' THEN NULL ELSE j.completed_at END
WHERE j.id = $1 AND j.user_id = $2
RETURNING {COLUMNS}
"""


@translate_errors
async def attach_character(
    connection: Connection, *, user_id: UUID, job_id: UUID, character_id: UUID, character_name: str
) -> Job | None:
    """Give a draft portrait job its new character (the caller checked, under lock, that it may)."""
    row = await connection.fetchrow(ATTACH_CHARACTER, job_id, user_id, character_id, character_name)
    return None if row is None else _job(row)


# --- the worker's side -------------------------------------------------------

# Claimable: queued and due, or processing with a lease that ran out (its
# worker died). SKIP LOCKED lets concurrent claimers pass each other by.
CLAIM = f"""
WITH next AS (
    SELECT id FROM jobs
    WHERE status IN ('queued', 'processing') AND run_after <= now()
      AND (locked_until IS NULL OR locked_until < now())
    ORDER BY run_after, created_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs AS j SET status = 'processing', locked_by = $1, locked_until = now() + make_interval(secs => $2),
    worker_id = $3, attempts = j.attempts + 1, started_at = coalesce(j.started_at, now())
FROM next
WHERE j.id = next.id
RETURNING {COLUMNS}, (SELECT m.provider FROM image_models m WHERE m.model_key = j.model_key) AS provider,
    now() AS claimed_at
"""


@translate_errors
async def claim(
    connection: Connection, *, lease_token: str, worker_id: str, lease_seconds: float
) -> ClaimedJob | None:
    """Take the next due job, leased to ``lease_token`` of ``worker_id``; None when nothing is due.

    Run it in a transaction with ``job_attempts.start``, so the attempt exists exactly when the claim does.
    """
    row = await connection.fetchrow(CLAIM, lease_token, lease_seconds, worker_id)
    if row is None:
        return None
    return ClaimedJob(job=_job(row), provider=Provider(row["provider"]), claimed_at=row["claimed_at"])


NEXT_DUE = """
SELECT min(greatest(run_after, coalesce(locked_until, run_after))) FROM jobs
WHERE status IN ('queued', 'processing')
"""


@translate_errors
async def next_due(connection: Executor) -> datetime | None:
    """When the next job becomes claimable (a retry's backoff or a lease running out), if any."""
    due: datetime | None = await connection.fetchval(NEXT_DUE)
    return due


EXTEND_LEASE = """
UPDATE jobs SET locked_until = now() + make_interval(secs => $3)
WHERE id = $1 AND locked_by = $2 AND status = 'processing'
RETURNING id
"""


@translate_errors
async def extend_lease(connection: Executor, *, job_id: UUID, lease_token: str, lease_seconds: float) -> bool:
    """Keep a running job ours; False when it was canceled or claimed by another worker."""
    return await connection.fetchval(EXTEND_LEASE, job_id, lease_token, lease_seconds) is not None


LOCK_LEASED = f"""
SELECT {COLUMNS} FROM jobs j WHERE j.id = $1 AND j.locked_by = $2 AND j.status = 'processing' FOR UPDATE
"""


@translate_errors
async def lock_leased(connection: Connection, *, job_id: UUID, lease_token: str) -> Job | None:
    """The job, row-locked, if it is still ours to finish; the fence of every finishing transaction."""
    row = await connection.fetchrow(LOCK_LEASED, job_id, lease_token)
    return None if row is None else _job(row)


RECORD_SUBMISSION = """
UPDATE jobs SET provider_request_id = $3
WHERE id = $1 AND locked_by = $2 AND status = 'processing'
RETURNING id
"""


@translate_errors
async def record_submission(connection: Executor, *, job_id: UUID, lease_token: str, request_id: str) -> bool:
    """Keep the provider's request id, so a retry resumes it instead of paying again."""
    return await connection.fetchval(RECORD_SUBMISSION, job_id, lease_token, request_id) is not None


RECORD_PROGRESS = """
UPDATE jobs SET provider_status = $3, queue_position = $4, provider_percent = $5, provider_message = $6
WHERE id = $1 AND locked_by = $2 AND status = 'processing'
  AND (provider_status IS DISTINCT FROM $3 OR queue_position IS DISTINCT FROM $4
       OR provider_percent IS DISTINCT FROM $5 OR provider_message IS DISTINCT FROM $6)
RETURNING id
"""


@translate_errors
async def record_progress(
    connection: Executor,
    *,
    job_id: UUID,
    lease_token: str,
    status: str,
    queue_position: int | None,
    percent: int | None = None,
    message: str | None = None,
) -> None:
    """What the provider says about the request; a no-op (no write, no event) when nothing changed."""
    await connection.execute(RECORD_PROGRESS, job_id, lease_token, status, queue_position, percent, message)


RECORD_RESULT = """
UPDATE jobs SET result_url = $3, seed = coalesce($4, seed)
WHERE id = $1 AND locked_by = $2 AND status = 'processing'
RETURNING id
"""


@translate_errors
async def record_result(
    connection: Executor, *, job_id: UUID, lease_token: str, result_url: str | None, seed: int | None
) -> bool:
    """Keep the provider's result, so a retry after a storage failure downloads it again instead of regenerating."""
    return await connection.fetchval(RECORD_RESULT, job_id, lease_token, result_url, seed) is not None


COMPLETE = """
UPDATE jobs SET status = 'completed', completed_at = now(), locked_by = NULL, locked_until = NULL, error = NULL,
    provider_status = CASE WHEN provider_status IS NULL THEN NULL ELSE 'COMPLETED' END, queue_position = NULL
WHERE id = $1 AND locked_by = $2 AND status = 'processing'
RETURNING id
"""


@translate_errors
async def complete(connection: Connection, *, job_id: UUID, lease_token: str) -> bool:
    return await connection.fetchval(COMPLETE, job_id, lease_token) is not None


RETRY_LATER = """
UPDATE jobs SET status = 'queued', run_after = now() + make_interval(secs => $4), error = $3,
    locked_by = NULL, locked_until = NULL
WHERE id = $1 AND locked_by = $2 AND status = 'processing'
RETURNING id
"""


@translate_errors
async def retry_later(
    connection: Executor, *, job_id: UUID, lease_token: str, error: str, delay_seconds: float
) -> bool:
    """Back to the queue after a failed attempt, due after ``delay_seconds``; ``error`` says why."""
    return await connection.fetchval(RETRY_LATER, job_id, lease_token, error, delay_seconds) is not None


FAIL = """
UPDATE jobs SET status = 'failed', completed_at = now(), error = $3, locked_by = NULL, locked_until = NULL,
    queue_position = NULL
WHERE id = $1 AND locked_by = $2 AND status = 'processing'
RETURNING id
"""


@translate_errors
async def fail(connection: Executor, *, job_id: UUID, lease_token: str, error: str) -> bool:
    """Give up on the job for good; ``error`` is what the client reads."""
    return await connection.fetchval(FAIL, job_id, lease_token, error) is not None


RELEASE = """
UPDATE jobs SET status = 'queued', run_after = now(), locked_by = NULL, locked_until = NULL,
    attempts = greatest(attempts - 1, 0)
WHERE id = $1 AND locked_by = $2 AND status = 'processing'
RETURNING id
"""


@translate_errors
async def release(connection: Executor, *, job_id: UUID, lease_token: str) -> bool:
    """Hand a job back untouched (the worker is shutting down): due now, and the attempt not counted."""
    return await connection.fetchval(RELEASE, job_id, lease_token) is not None


# A verified provider webhook: the unfinished jobs holding that provider's request. Only unfinished ones: the
# partial index jobs_queue_idx (0001) covers them, so no index on provider_request_id is needed.
PROVIDER_REQUEST_JOBS = """
SELECT j.id, j.status FROM jobs j JOIN image_models m ON m.model_key = j.model_key
WHERE j.provider_request_id = $1 AND m.provider = $2 AND j.status IN ('queued', 'processing')
"""
NOTIFY_PROVIDER_DONE = "SELECT pg_notify($1, $2)"


@translate_errors
async def wake_provider_request(
    connection: Executor, *, provider: str, request_id: str, channel: str, payload: str
) -> list[tuple[UUID, JobStatus]]:
    """Tell the workers (NOTIFY ``channel``, sent at commit) that ``provider`` finished ``request_id``, when a job
    of ours is running it; returns the unfinished jobs holding the request (none: not ours, not recorded yet, or
    finished). A finished, failed or canceled job is left alone: a late or repeated webhook changes nothing, and
    a queued one (waiting to retry) asks the provider when it is claimed.
    """
    rows = await connection.fetch(PROVIDER_REQUEST_JOBS, request_id, provider)
    found = [(row["id"], JobStatus(row["status"])) for row in rows]
    if any(status is JobStatus.PROCESSING for _, status in found):
        await connection.execute(NOTIFY_PROVIDER_DONE, channel, payload)
    return found
