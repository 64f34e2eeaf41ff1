"""Persisted documents as a process sees them: the shared table, with the ones in use kept in memory.

Every process reads the same ``persisted_documents`` rows
(storage/persisted_documents.py), so a document registered through one is
known to all; each keeps the documents it serves in a least-recently-used
map bounded by their characters, so a hit costs no database round trip.
Using a document refreshes its row's ``last_used_at`` when a process reads
it from the table, then at most once per ``TOUCH_INTERVAL_SECONDS`` while it
serves it from memory: the table evicts the least recently used automatic
rows, and a hit must not cost a write.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

import asyncpg

from storage import persisted_documents
from storage.errors import StorageError
from storage.persisted_documents import Source

logger = logging.getLogger(__name__)

# Characters of documents one process keeps in memory: hundreds of typical documents of a few KB (about 2 MB).
MEMORY_CHARS = 1_000_000
# How stale a used document's last_used_at may grow: eviction is least-recently-used to within this.
TOUCH_INTERVAL_SECONDS = 3600.0


@dataclass(slots=True)
class _Known:
    body: str
    touched_at: float  # time.monotonic() of the last write of last_used_at (or of the read that found it)


class DocumentMemory:
    """SHA-256 -> document text, least recently used out past ``max_chars``."""

    def __init__(self, max_chars: int = MEMORY_CHARS) -> None:
        self.max_chars = max_chars
        self._entries: OrderedDict[str, _Known] = OrderedDict()
        self._chars = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, sha256: str) -> _Known | None:
        entry = self._entries.get(sha256)
        if entry is not None:
            self._entries.move_to_end(sha256)
        return entry

    def put(self, sha256: str, body: str) -> None:
        if sha256 in self._entries or len(body) > self.max_chars:
            return
        self._entries[sha256] = _Known(body, time.monotonic())
        self._chars += len(body)
        while self._chars > self.max_chars:
            _, evicted = self._entries.popitem(last=False)
            self._chars -= len(evicted.body)


class PersistedStore:
    """Looks documents up and keeps new ones; ``registered_only`` sees registered documents only."""

    def __init__(self, *, registered_only: bool, max_automatic: int, memory: DocumentMemory | None = None) -> None:
        self.registered_only = registered_only
        self.max_automatic = max_automatic
        self.memory = DocumentMemory() if memory is None else memory

    async def lookup(self, pool: asyncpg.Pool, sha256: str) -> str | None:
        """The document of that hash, or None; raises ``StorageError`` when the database cannot say."""
        known = self.memory.get(sha256)
        if known is not None:
            if time.monotonic() - known.touched_at >= TOUCH_INTERVAL_SECONDS:
                known.touched_at = time.monotonic()
                await self._touch(pool, sha256)
            return known.body
        source = Source.REGISTERED if self.registered_only else None
        document = await persisted_documents.find(pool, sha256, source=source)
        if document is None:
            return None
        self.memory.put(sha256, document.body)
        await self._touch(pool, sha256)  # once per load into this process's memory, then at most hourly
        return document.body

    async def save(self, pool: asyncpg.Pool, sha256: str, body: str) -> None:
        """Keep a document a client registered (automatic mode); a failure is logged, the request goes on."""
        try:
            async with pool.acquire() as connection:
                await persisted_documents.save_automatic(connection, sha256, body, max_count=self.max_automatic)
        except StorageError as error:
            logger.warning("could not keep a persisted document: %s", error)
            return
        self.memory.put(sha256, body)

    async def _touch(self, pool: asyncpg.Pool, sha256: str) -> None:
        try:
            await persisted_documents.touch(pool, [sha256])
        except StorageError as error:
            logger.warning("could not mark a persisted document used: %s", error)
