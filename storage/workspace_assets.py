"""The ``workspace_assets`` table: generated images in workspace-temp, until they expire.

Paths are kept as the seed keeps them, relative to the workspace-temp bucket.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict
from uuid import UUID

import asyncpg

from storage.database import Connection, Executor, returned
from storage.enums import AssetType
from storage.errors import translate_errors
from storage.objects.paths import Bucket
from storage.stored_objects import present_keys_column

BUCKET_PREFIX = f"{Bucket.WORKSPACE_TEMP.value}/"


class GenerationSettings(TypedDict, total=False):
    """workspace_assets.generation_settings (jsonb) as the worker writes it (pipeline/generation.py)."""

    width: int
    height: int
    quality: str
    destination: str
    character_id: str | None
    thumbnail_width: int
    thumbnail_height: int


@dataclass(frozen=True, slots=True)
class WorkspaceAsset:
    id: UUID
    user_id: UUID
    job_id: UUID | None
    asset_type: AssetType
    temp_storage_path: str
    thumbnail_path: str | None
    mime_type: str
    file_size_bytes: int
    original_prompt: str | None
    model_used: str | None
    generation_seed: int | None
    generation_settings: GenerationSettings
    created_at: datetime
    expires_at: datetime
    # Which of the image and thumbnail exist, as "bucket/path" catalog keys, from the same statement.
    stored_keys: frozenset[str] = frozenset()

    @property
    def sort_key(self) -> tuple[datetime, UUID]:
        return (self.created_at, self.id)

    @property
    def image_key(self) -> str:
        """How a character's image_url names this image."""
        return BUCKET_PREFIX + self.temp_storage_path


_STORED_KEYS = present_keys_column(
    f"'{BUCKET_PREFIX}' || w.temp_storage_path", f"'{BUCKET_PREFIX}' || w.thumbnail_path", alias="stored_keys"
)

COLUMNS = f"""w.id, w.user_id, w.job_id, w.asset_type, w.temp_storage_path, w.thumbnail_path, w.mime_type,
    w.file_size_bytes, w.original_prompt, w.model_used, w.generation_seed, w.generation_settings, w.created_at,
    w.expires_at, {_STORED_KEYS}"""


def _asset(row: asyncpg.Record) -> WorkspaceAsset:
    return WorkspaceAsset(
        id=row["id"],
        user_id=row["user_id"],
        job_id=row["job_id"],
        asset_type=AssetType(row["asset_type"]),
        temp_storage_path=row["temp_storage_path"],
        thumbnail_path=row["thumbnail_path"],
        mime_type=row["mime_type"],
        file_size_bytes=row["file_size_bytes"],
        original_prompt=row["original_prompt"],
        model_used=row["model_used"],
        generation_seed=row["generation_seed"],
        generation_settings=row["generation_settings"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        stored_keys=frozenset(row["stored_keys"]),
    )


GET = f"SELECT {COLUMNS} FROM workspace_assets w WHERE w.id = $1 AND w.user_id = $2"


@translate_errors
async def get(connection: Connection, *, user_id: UUID, asset_id: UUID) -> WorkspaceAsset | None:
    row = await connection.fetchrow(GET, asset_id, user_id)
    return None if row is None else _asset(row)


GET_BY_JOB = f"SELECT {COLUMNS} FROM workspace_assets w WHERE w.job_id = $1"


@translate_errors
async def get_by_job(connection: Executor, *, job_id: UUID) -> WorkspaceAsset | None:
    """The asset a job made, if an attempt got that far (for the worker, which owns the job)."""
    row = await connection.fetchrow(GET_BY_JOB, job_id)
    return None if row is None else _asset(row)


GET_BY_JOB_FOR_SHARE = f"SELECT {COLUMNS} FROM workspace_assets w WHERE w.job_id = $1 AND w.user_id = $2 FOR SHARE"


@translate_errors
async def get_by_job_for_share(
    connection: Connection, *, user_id: UUID, job_id: UUID
) -> WorkspaceAsset | None:
    """The user's asset of a job, share-locked: the sweeper cannot delete it before this transaction ends."""
    row = await connection.fetchrow(GET_BY_JOB_FOR_SHARE, job_id, user_id)
    return None if row is None else _asset(row)


GET_MANY_BY_JOB = f"SELECT {COLUMNS} FROM workspace_assets w WHERE w.job_id = ANY($1::uuid[]) AND w.user_id = $2"


@translate_errors
async def get_many_by_job(
    connection: Connection, *, user_id: UUID, job_ids: Collection[UUID]
) -> list[WorkspaceAsset]:
    return [_asset(row) for row in await connection.fetch(GET_MANY_BY_JOB, [*job_ids], user_id)]


LIST_FIRST = f"""
SELECT {COLUMNS} FROM workspace_assets w
WHERE w.user_id = $1 AND w.expires_at > now()
ORDER BY w.created_at DESC, w.id DESC
LIMIT $2
"""
LIST_AFTER = f"""
SELECT {COLUMNS} FROM workspace_assets w
WHERE w.user_id = $1 AND w.expires_at > now() AND (w.created_at, w.id) < ($3, $4)
ORDER BY w.created_at DESC, w.id DESC
LIMIT $2
"""


@translate_errors
async def list_page(
    connection: Connection, *, user_id: UUID, limit: int, after: tuple[datetime, UUID] | None = None
) -> list[WorkspaceAsset]:
    """The user's unexpired workspace images, newest first."""
    if after is None:
        rows = await connection.fetch(LIST_FIRST, user_id, limit)
    else:
        rows = await connection.fetch(LIST_AFTER, user_id, limit, after[0], after[1])
    return [_asset(row) for row in rows]


COUNT = "SELECT count(*) FROM workspace_assets w WHERE w.user_id = $1 AND w.expires_at > now()"


@translate_errors
async def count(connection: Connection, *, user_id: UUID) -> int:
    """How many unexpired workspace images the user has (a connection's totalCount)."""
    total: int = await connection.fetchval(COUNT, user_id)
    return total


# Idempotent: a second attempt of the same job finds the row its first one wrote.
CREATE = f"""
WITH inserted AS (
    INSERT INTO workspace_assets AS w (user_id, job_id, asset_type, temp_storage_path, thumbnail_path, mime_type,
        file_size_bytes, original_prompt, model_used, generation_seed, generation_settings, expires_at)
    VALUES ($1, $2, 'image', $3, $4, $5, $6, $7, $8, $9, $10, now() + make_interval(secs => $11))
    ON CONFLICT (job_id) DO NOTHING
    RETURNING w.*
)
SELECT {COLUMNS} FROM inserted w
UNION ALL
SELECT {COLUMNS} FROM workspace_assets w WHERE w.job_id = $2 AND NOT EXISTS (SELECT 1 FROM inserted)
"""


@translate_errors
async def create(
    connection: Connection,
    *,
    user_id: UUID,
    job_id: UUID,
    temp_storage_path: str,
    thumbnail_path: str | None,
    mime_type: str,
    file_size_bytes: int,
    original_prompt: str,
    model_used: str,
    generation_seed: int | None,
    generation_settings: GenerationSettings,
    ttl_seconds: float,
) -> WorkspaceAsset:
    """Record a job's workspace image (or return the record an earlier attempt made)."""
    row = await connection.fetchrow(
        CREATE,
        user_id,
        job_id,
        temp_storage_path,
        thumbnail_path,
        mime_type,
        file_size_bytes,
        original_prompt,
        model_used,
        generation_seed,
        dict(generation_settings),
        ttl_seconds,
    )
    return _asset(returned(row))


# The sweeper: expired assets no character points at, row-locked so an
# attaching createCharacter (which share-locks the asset) and the sweeper
# never both win. Rows locked by someone else are skipped for the next run.
LOCK_EXPIRED = f"""
SELECT {COLUMNS} FROM workspace_assets w
WHERE w.expires_at <= now()
ORDER BY w.expires_at
LIMIT $1
FOR UPDATE OF w SKIP LOCKED
"""
# Checked after the lock, by a statement of its own (a fresh snapshot), so a
# character that started pointing at an asset just before is seen.
STILL_USED = """
SELECT DISTINCT k.key FROM unnest($1::text[]) AS k(key)
WHERE EXISTS (SELECT 1 FROM characters c WHERE c.image_url = k.key OR c.reference_image_url = k.key)
"""
DELETE = "DELETE FROM workspace_assets WHERE id = ANY($1::uuid[])"
# A kept asset is looked at again later, not on every run (it would crowd out the rest).
POSTPONE = "UPDATE workspace_assets SET expires_at = now() + make_interval(secs => $2) WHERE id = ANY($1::uuid[])"


@translate_errors
async def delete_expired(
    connection: Connection, *, limit: int, recheck_seconds: float
) -> tuple[list[WorkspaceAsset], list[WorkspaceAsset]]:
    """Delete up to ``limit`` expired, unused assets (inside the caller's transaction).

    Returns the deleted rows (whose objects the caller removes after commit)
    and the expired ones kept because a character uses them, which are
    postponed by ``recheck_seconds``.
    """
    candidates = [_asset(row) for row in await connection.fetch(LOCK_EXPIRED, limit)]
    if not candidates:
        return [], []
    used = {row["key"] for row in await connection.fetch(STILL_USED, [asset.image_key for asset in candidates])}
    doomed = [asset for asset in candidates if asset.image_key not in used]
    kept = [asset for asset in candidates if asset.image_key in used]
    if doomed:
        await connection.execute(DELETE, [asset.id for asset in doomed])
    if kept:
        await connection.execute(POSTPONE, [asset.id for asset in kept], recheck_seconds)
    return doomed, kept
