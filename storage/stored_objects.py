"""The ``stored_objects`` table: the catalog of objects we wrote, keyed ``bucket/path``."""

from __future__ import annotations

from collections.abc import Collection

import asyncpg

from storage.errors import translate_errors
from storage.objects.store import ObjectInfo

CREATE = """
INSERT INTO stored_objects (key, size_bytes, content_type, etag)
VALUES ($1, $2, $3, $4)
ON CONFLICT (key) DO UPDATE
SET size_bytes = EXCLUDED.size_bytes, content_type = EXCLUDED.content_type, etag = EXCLUDED.etag, created_at = now()
"""


@translate_errors
async def create(connection: asyncpg.Connection | asyncpg.Pool, *, info: ObjectInfo) -> None:
    """Record an object just written (a rewrite of the same key replaces the row)."""
    await connection.execute(CREATE, info.key, info.size, info.content_type, info.etag)


DELETE = "DELETE FROM stored_objects WHERE key = $1"


@translate_errors
async def delete(connection: asyncpg.Connection | asyncpg.Pool, *, key: str) -> None:
    """Forget an object about to be deleted."""
    await connection.execute(DELETE, key)


LIST_PRESENT = "SELECT key FROM stored_objects WHERE key = ANY($1::text[])"


@translate_errors
async def list_present(connection: asyncpg.Connection | asyncpg.Pool, *, keys: Collection[str]) -> set[str]:
    """Which of ``keys`` are catalogued, in one round trip."""
    rows = await connection.fetch(LIST_PRESENT, [*keys])
    return {row["key"] for row in rows}
