"""The ``user_library`` table: the user's permanent images in user-library.

Paths are kept as the seed keeps them, relative to the user-library bucket.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict
from uuid import UUID

import asyncpg

from storage.database import Connection, returned
from storage.enums import AssetType, LibraryTab
from storage.errors import translate_errors
from storage.objects.paths import Bucket
from storage.stored_objects import present_keys_column

BUCKET_PREFIX = f"{Bucket.USER_LIBRARY.value}/"


class RoleplayMetadata(TypedDict, total=False):
    """user_library.roleplay_metadata (jsonb): the seed's marks of a character portrait, empty for other images."""

    type: str
    character_id: str
    character_name: str
    consistency_method: str | None


@dataclass(frozen=True, slots=True)
class LibraryAsset:
    id: UUID
    user_id: UUID
    asset_type: AssetType
    storage_path: str
    thumbnail_path: str | None
    file_size_bytes: int
    mime_type: str
    original_prompt: str | None
    model_used: str | None
    generation_seed: int | None
    width: int | None
    height: int | None
    tags: tuple[str, ...]
    roleplay_metadata: RoleplayMetadata
    content_category: str | None
    source_job_id: UUID | None
    created_at: datetime
    # Which of the image and thumbnail exist, as "bucket/path" catalog keys, from the same statement.
    stored_keys: frozenset[str] = frozenset()

    @property
    def sort_key(self) -> tuple[datetime, UUID]:
        return (self.created_at, self.id)

    @property
    def image_key(self) -> str:
        """How a character's image_url names this image."""
        return BUCKET_PREFIX + self.storage_path


@dataclass(frozen=True, slots=True)
class NewLibraryAsset:
    """A library row to insert; the saving job's id makes the insert happen once."""

    user_id: UUID
    source_job_id: UUID
    storage_path: str
    thumbnail_path: str | None
    file_size_bytes: int
    mime_type: str
    original_prompt: str | None
    model_used: str | None
    generation_seed: int | None
    width: int | None
    height: int | None
    tags: Sequence[str]
    roleplay_metadata: RoleplayMetadata
    content_category: str | None


_STORED_KEYS = present_keys_column(
    f"'{BUCKET_PREFIX}' || l.storage_path", f"'{BUCKET_PREFIX}' || l.thumbnail_path", alias="stored_keys"
)

COLUMNS = f"""l.id, l.user_id, l.asset_type, l.storage_path, l.thumbnail_path, l.file_size_bytes, l.mime_type,
    l.original_prompt, l.model_used, l.generation_seed, l.width, l.height, l.tags, l.roleplay_metadata,
    l.content_category, l.source_job_id, l.created_at, {_STORED_KEYS}"""


def _asset(row: asyncpg.Record) -> LibraryAsset:
    return LibraryAsset(
        id=row["id"],
        user_id=row["user_id"],
        asset_type=AssetType(row["asset_type"]),
        storage_path=row["storage_path"],
        thumbnail_path=row["thumbnail_path"],
        file_size_bytes=row["file_size_bytes"],
        mime_type=row["mime_type"],
        original_prompt=row["original_prompt"],
        model_used=row["model_used"],
        generation_seed=row["generation_seed"],
        width=row["width"],
        height=row["height"],
        tags=tuple(row["tags"]),
        roleplay_metadata=row["roleplay_metadata"],
        content_category=row["content_category"],
        source_job_id=row["source_job_id"],
        created_at=row["created_at"],
        stored_keys=frozenset(row["stored_keys"]),
    )


GET_MANY_BY_JOB = f"SELECT {COLUMNS} FROM user_library l WHERE l.source_job_id = ANY($1::uuid[]) AND l.user_id = $2"


@translate_errors
async def get_many_by_job(
    connection: Connection, *, user_id: UUID, job_ids: Collection[UUID]
) -> list[LibraryAsset]:
    return [_asset(row) for row in await connection.fetch(GET_MANY_BY_JOB, [*job_ids], user_id)]


GET_FOR_SHARE = f"SELECT {COLUMNS} FROM user_library l WHERE l.id = $1 AND l.user_id = $2 FOR SHARE OF l"


@translate_errors
async def get_for_share(connection: Connection, *, user_id: UUID, asset_id: UUID) -> LibraryAsset | None:
    """One of the user's library assets, or None (another user's too), share-locked until the transaction ends.

    A delete of the asset waits, so a character cannot be pointed at it as it goes (the delete then clears
    the pointer, storage/characters.py: ``clear_image``).
    """
    row = await connection.fetchrow(GET_FOR_SHARE, asset_id, user_id)
    return None if row is None else _asset(row)


GET_BY_PATH = f"SELECT {COLUMNS} FROM user_library l WHERE l.storage_path = $1 AND l.user_id = $2"


@translate_errors
async def get_by_path(connection: Connection, *, user_id: UUID, storage_path: str) -> LibraryAsset | None:
    """The user's library asset stored at ``storage_path`` (relative to user-library), or None."""
    row = await connection.fetchrow(GET_BY_PATH, storage_path, user_id)
    return None if row is None else _asset(row)


# The seed's characters tab (UpdatedOptimizedLibrary.tsx): any one of three marks.
CHARACTERS_TAB = """(l.roleplay_metadata->>'type' = 'character_portrait'
    OR 'character' = ANY(l.tags) OR l.content_category = 'character')"""

LIST_FIRST = f"""
SELECT {COLUMNS} FROM user_library l
WHERE l.user_id = $1 AND (NOT $3 OR {CHARACTERS_TAB})
ORDER BY l.created_at DESC, l.id DESC
LIMIT $2
"""
LIST_AFTER = f"""
SELECT {COLUMNS} FROM user_library l
WHERE l.user_id = $1 AND (NOT $3 OR {CHARACTERS_TAB}) AND (l.created_at, l.id) < ($4, $5)
ORDER BY l.created_at DESC, l.id DESC
LIMIT $2
"""


@translate_errors
async def list_page(
    connection: Connection,
    *,
    user_id: UUID,
    limit: int,
    after: tuple[datetime, UUID] | None = None,
    tab: LibraryTab = LibraryTab.ALL,
) -> list[LibraryAsset]:
    """The user's library, newest first; the characters tab is the seed's."""
    characters_only = tab is LibraryTab.CHARACTERS
    if after is None:
        rows = await connection.fetch(LIST_FIRST, user_id, limit, characters_only)
    else:
        rows = await connection.fetch(LIST_AFTER, user_id, limit, characters_only, after[0], after[1])
    return [_asset(row) for row in rows]


COUNT = f"SELECT count(*) FROM user_library l WHERE l.user_id = $1 AND (NOT $2 OR {CHARACTERS_TAB})"


@translate_errors
async def count(connection: Connection, *, user_id: UUID, tab: LibraryTab = LibraryTab.ALL) -> int:
    """How many images the user's library holds in ``tab`` (a connection's totalCount)."""
    total: int = await connection.fetchval(COUNT, user_id, tab is LibraryTab.CHARACTERS)
    return total


# Exactly once per job: a second run of the save step finds the first one's row.
CREATE = f"""
WITH inserted AS (
    INSERT INTO user_library AS l (user_id, source_job_id, storage_path, thumbnail_path, file_size_bytes, mime_type,
        original_prompt, model_used, generation_seed, width, height, tags, roleplay_metadata, content_category)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
    ON CONFLICT (source_job_id) DO NOTHING
    RETURNING l.*
)
SELECT {COLUMNS} FROM inserted l
UNION ALL
SELECT {COLUMNS} FROM user_library l WHERE l.source_job_id = $2 AND NOT EXISTS (SELECT 1 FROM inserted)
"""


@translate_errors
async def create(connection: Connection, *, asset: NewLibraryAsset) -> LibraryAsset:
    """Insert the job's library row, or return the one it already has."""
    row = await connection.fetchrow(
        CREATE,
        asset.user_id,
        asset.source_job_id,
        asset.storage_path,
        asset.thumbnail_path,
        asset.file_size_bytes,
        asset.mime_type,
        asset.original_prompt,
        asset.model_used,
        asset.generation_seed,
        asset.width,
        asset.height,
        [*asset.tags],
        dict(asset.roleplay_metadata),
        asset.content_category,
    )
    return _asset(returned(row))


DELETE = f"DELETE FROM user_library l WHERE l.id = $1 AND l.user_id = $2 RETURNING {COLUMNS}"


@translate_errors
async def delete(connection: Connection, *, user_id: UUID, asset_id: UUID) -> LibraryAsset | None:
    """Delete one of the user's library rows, returning it (its objects are the caller's to remove)."""
    row = await connection.fetchrow(DELETE, asset_id, user_id)
    return None if row is None else _asset(row)
