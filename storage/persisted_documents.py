"""The ``persisted_documents`` table: GraphQL documents known by the SHA-256 of their text.

Two sources (storage/migrations/0008_persisted_documents.sql): ``automatic``
rows, which clients register by sending hash and text (Apollo's automatic
persisted queries), bounded by a row count with the least recently used
dropped first; and ``registered`` rows, written ahead of time by
``portraits documents register`` and never dropped.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from storage.database import Connection, Executor
from storage.errors import translate_errors

# A document's longest text: graph/schema.py's MAX_CACHED_DOCUMENT_CHARS (a test checks they agree), and the
# table's CHECK.
MAX_BODY_CHARS = 10_000


class Source(enum.StrEnum):
    AUTOMATIC = "automatic"
    REGISTERED = "registered"


@dataclass(frozen=True, slots=True)
class PersistedDocument:
    sha256: str
    body: str
    source: Source
    operation_name: str | None


FIND = """
SELECT sha256, body, source, operation_name FROM persisted_documents
WHERE sha256 = $1 AND ($2::text IS NULL OR source = $2)
"""


@translate_errors
async def find(executor: Executor, sha256: str, *, source: Source | None = None) -> PersistedDocument | None:
    """The document with that hash (of ``source`` only, when given), or None."""
    row = await executor.fetchrow(FIND, sha256, None if source is None else source.value)
    if row is None:
        return None
    return PersistedDocument(row["sha256"], row["body"], Source(row["source"]), row["operation_name"])


INSERT_AUTOMATIC = """
INSERT INTO persisted_documents (sha256, body, source) VALUES ($1, $2, 'automatic')
ON CONFLICT (sha256) DO UPDATE SET last_used_at = now()
RETURNING (xmax = 0) AS inserted
"""
# Keeps the ``$1`` most recently used automatic rows. Walks the partial index newest first and deletes the rest:
# it runs only after an insert of a new document, a rare event once clients' documents are known. The outer
# ``source = 'automatic'`` is what PostgreSQL checks again on a row a concurrent transaction changed (READ
# COMMITTED re-evaluates the DELETE's own condition, not its subquery): a row registered meanwhile stays.
EVICT = """
DELETE FROM persisted_documents WHERE source = 'automatic' AND sha256 IN (
    SELECT sha256 FROM persisted_documents WHERE source = 'automatic'
    ORDER BY last_used_at DESC OFFSET $1
)
"""


@translate_errors
async def save_automatic(connection: Connection, sha256: str, body: str, *, max_count: int) -> bool:
    """Keep a document a client sent with its hash; past ``max_count`` automatic rows the least recently used go.

    True when it was new. One that exists (either source) is only marked used.
    """
    async with connection.transaction():
        inserted: bool = await connection.fetchval(INSERT_AUTOMATIC, sha256, body)
        if inserted:
            await connection.execute(EVICT, max_count)
    return inserted


TOUCH = "UPDATE persisted_documents SET last_used_at = now() WHERE sha256 = ANY($1::text[])"


@translate_errors
async def touch(executor: Executor, sha256s: list[str]) -> None:
    """Mark documents used now (callers do it at most once an hour per document: a hit costs no write)."""
    await executor.execute(TOUCH, sha256s)


REGISTER = """
INSERT INTO persisted_documents (sha256, body, source, operation_name) VALUES ($1, $2, 'registered', $3)
ON CONFLICT (sha256) DO UPDATE
SET source = 'registered', operation_name = coalesce(EXCLUDED.operation_name, persisted_documents.operation_name)
RETURNING (SELECT source FROM persisted_documents WHERE sha256 = $1) AS was  -- (the row as it was before)
"""


@translate_errors
async def register(connection: Connection, documents: list[PersistedDocument]) -> list[bool]:
    """Register documents ahead of time, all or none; an automatic row of the same hash becomes registered.

    For each, True when it was not registered before.
    """
    newly: list[bool] = []
    async with connection.transaction():
        for document in documents:
            was = await connection.fetchval(REGISTER, document.sha256, document.body, document.operation_name)
            newly.append(was != Source.REGISTERED.value)
    return newly


COUNT = "SELECT count(*) FROM persisted_documents WHERE source = $1"


@translate_errors
async def count(executor: Executor, source: Source) -> int:
    """How many documents of ``source`` are kept."""
    total: int = await executor.fetchval(COUNT, source.value)
    return total
