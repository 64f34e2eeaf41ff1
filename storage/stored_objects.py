"""The ``stored_objects`` table: the catalog of objects we wrote, keyed ``bucket/path``."""

from __future__ import annotations

from storage.database import Executor
from storage.errors import translate_errors
from storage.objects.store import ObjectInfo

CREATE = """
INSERT INTO stored_objects (key, size_bytes, content_type, etag)
VALUES ($1, $2, $3, $4)
ON CONFLICT (key) DO UPDATE
SET size_bytes = EXCLUDED.size_bytes, content_type = EXCLUDED.content_type, etag = EXCLUDED.etag, created_at = now()
"""


@translate_errors
async def create(connection: Executor, *, info: ObjectInfo) -> None:
    """Record an object just written (a rewrite of the same key replaces the row)."""
    await connection.execute(CREATE, info.key, info.size, info.content_type, info.etag)


DELETE = "DELETE FROM stored_objects WHERE key = $1"


@translate_errors
async def delete(connection: Executor, *, key: str) -> None:
    """Forget an object about to be deleted."""
    await connection.execute(DELETE, key)


def present_keys_column(*key_expressions: str, alias: str) -> str:
    """A select-list column: which of these SQL key expressions are catalogued, as a text[].

    Pages of characters and assets learn which of their images exist inside
    their own statement (a primary-key probe per expression), never per image.
    """
    return f"""ARRAY(
        SELECT o.key FROM stored_objects o WHERE o.key IN ({", ".join(key_expressions)})
    ) AS {alias}"""
