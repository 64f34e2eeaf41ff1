"""The object-store interface that both backends (local folder, S3) implement.

Callers pass buckets and paths already checked by ``storage.objects.paths``;
backends check again, because a path that escapes its bucket must never
reach a file system or an S3 key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from storage.errors import StorageError
from storage.objects.paths import Bucket

DEFAULT_CHUNK_SIZE = 64 * 1024


class ObjectNotFound(StorageError):
    """No object under that bucket and path."""


class ObjectStoreUnavailable(StorageError):
    """The object store could not be reached or refused us (credentials, disk)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    bucket: Bucket
    path: str
    size: int
    content_type: str
    # Quoted, as in HTTP; it changes whenever the content does.
    etag: str
    last_modified: datetime

    @property
    def key(self) -> str:
        return f"{self.bucket.value}/{self.path}"


class ObjectStore(Protocol):
    """Private buckets of immutable-once-written objects, read by clients through signed URLs."""

    async def put(self, bucket: Bucket, path: str, data: bytes) -> ObjectInfo:
        """Store ``data`` atomically under ``path``, replacing what was there; the type comes from the extension."""
        ...

    async def get(self, bucket: Bucket, path: str) -> bytes:
        """The whole object; ObjectNotFound when there is none."""
        ...

    def stream(self, bucket: Bucket, path: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        """The object in chunks, for bodies too large to hold; ObjectNotFound on first iteration."""
        ...

    async def head(self, bucket: Bucket, path: str) -> ObjectInfo:
        """The object's metadata; ObjectNotFound when there is none."""
        ...

    async def copy(self, bucket: Bucket, path: str, *, to_bucket: Bucket, to_path: str) -> ObjectInfo:
        """Copy within the store (server-side on S3), atomically at the destination."""
        ...

    async def delete(self, bucket: Bucket, path: str) -> None:
        """Remove the object; a missing one is not an error."""
        ...

    async def list_objects(self, bucket: Bucket, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose path starts with ``prefix`` (a plain string prefix, as in S3), by path."""
        ...

    def sign(self, bucket: Bucket, path: str, *, issued_at: int, expires_at: int) -> str:
        """A URL that lets anyone holding it GET the object until ``expires_at`` (Unix seconds).

        Deterministic for the same arguments and ``signing_identity()``, so a
        caller can cache it by both; ``storage.objects.signing.UrlSigner`` picks the times.
        """
        ...

    def signing_identity(self) -> Hashable:
        """What ``sign``'s URLs depend on besides its arguments (S3's current credentials).

        It changes when they rotate, so a cache of URLs made with the old ones is dropped.
        """
        ...

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...
