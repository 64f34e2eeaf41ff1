"""An object store that keeps the ``stored_objects`` catalog in step with its writes.

Everything in the app writes objects through this, so the catalog answers
"which of these images exist?" for a whole page in the page's own SQL
statement. Order makes it safe without a distributed transaction: the row
is written after the object and removed before it, so a crash in between
leaves at worst an uncatalogued object (invisible, never a broken URL).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable

import asyncpg

from storage import stored_objects
from storage.objects.paths import Bucket
from storage.objects.store import DEFAULT_CHUNK_SIZE, ObjectInfo, ObjectStore


class CatalogedObjectStore:
    def __init__(self, store: ObjectStore, pool: asyncpg.Pool) -> None:
        self.store = store
        self._pool = pool

    async def put(self, bucket: Bucket, path: str, data: bytes) -> ObjectInfo:
        info = await self.store.put(bucket, path, data)
        await stored_objects.create(self._pool, info=info)
        return info

    async def get(self, bucket: Bucket, path: str) -> bytes:
        return await self.store.get(bucket, path)

    def stream(self, bucket: Bucket, path: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        return self.store.stream(bucket, path, chunk_size=chunk_size)

    async def head(self, bucket: Bucket, path: str) -> ObjectInfo:
        return await self.store.head(bucket, path)

    async def copy(self, bucket: Bucket, path: str, *, to_bucket: Bucket, to_path: str) -> ObjectInfo:
        info = await self.store.copy(bucket, path, to_bucket=to_bucket, to_path=to_path)
        await stored_objects.create(self._pool, info=info)
        return info

    async def delete(self, bucket: Bucket, path: str) -> None:
        await stored_objects.delete(self._pool, key=f"{bucket.value}/{path}")
        await self.store.delete(bucket, path)

    async def list_objects(self, bucket: Bucket, prefix: str = "") -> list[ObjectInfo]:
        return await self.store.list_objects(bucket, prefix)

    def sign(self, bucket: Bucket, path: str, *, issued_at: int, expires_at: int) -> str:
        return self.store.sign(bucket, path, issued_at=issued_at, expires_at=expires_at)

    def signing_identity(self) -> Hashable:
        return self.store.signing_identity()

    async def close(self) -> None:
        await self.store.close()
