"""The local-folder object store: each bucket is a folder under one root.

Writes go to a temporary file under ``{root}/.tmp`` (same file system), are
fsynced, then renamed over the final name, so a crash never leaves half an
object under its name. Copies are hard links where the file system allows
(objects are never modified in place, only replaced by rename).
Signed URLs point at the app's own ``/storage/v1/object/sign/...`` route.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import stat as stat_module
import tempfile
import time
from collections.abc import AsyncIterator, Hashable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from storage.objects.paths import Bucket, check_path, content_type_for
from storage.objects.store import DEFAULT_CHUNK_SIZE, ObjectInfo, ObjectNotFound, ObjectStoreUnavailable
from storage.objects.tokens import ObjectTokens

SIGN_ROUTE = "/storage/v1/object/sign"
_TMP = ".tmp"
# A write in progress takes seconds at most; older temporary files were left by a crash.
STALE_TEMPORARY_SECONDS = 3600


class LocalObjectStore:
    def __init__(self, root: Path, *, public_url: str, tokens: ObjectTokens) -> None:
        self.root = root
        self.tokens = tokens
        self._sign_base = f"{public_url.rstrip('/')}{SIGN_ROUTE}/"
        for bucket in Bucket:
            (root / bucket.value).mkdir(parents=True, exist_ok=True)
        (root / _TMP).mkdir(exist_ok=True)
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        """Half-written files of a process that crashed; never visible as objects, only wasted disk."""
        cutoff = time.time() - STALE_TEMPORARY_SECONDS
        for entry in os.scandir(self.root / _TMP):
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
            except FileNotFoundError:
                continue

    def file_path(self, bucket: Bucket, path: str) -> Path:
        """Where the object lives on disk; the path is checked, so it stays inside the bucket folder."""
        return self.root / bucket.value / check_path(path)

    def info(self, bucket: Bucket, path: str) -> ObjectInfo:
        """Metadata from one ``stat``; ObjectNotFound when missing. Sync: it never blocks for long."""
        return self.stat(bucket, path)[1]

    def stat(self, bucket: Bucket, path: str) -> tuple[os.stat_result, ObjectInfo]:
        """The file's one ``stat`` and the metadata made from it, for a server that sends the file itself."""
        file = self.file_path(bucket, path)
        try:
            result = file.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"{bucket.value}/{path}") from None
        except OSError as error:
            raise ObjectStoreUnavailable(str(error)) from error
        if not stat_module.S_ISREG(result.st_mode):
            raise ObjectNotFound(f"{bucket.value}/{path}")
        return result, _info(bucket, path, result)

    async def put(self, bucket: Bucket, path: str, data: bytes) -> ObjectInfo:
        target = self.file_path(bucket, path)
        return await asyncio.to_thread(self._put, bucket, path, target, data)

    def _put(self, bucket: Bucket, path: str, target: Path, data: bytes) -> ObjectInfo:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.root / _TMP, prefix="put-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(temporary, 0o644)
                os.replace(temporary, target)
            except BaseException:
                _unlink_quietly(temporary)
                raise
            return _info(bucket, path, target.stat())
        except OSError as error:
            raise ObjectStoreUnavailable(f"cannot write {bucket.value}/{path}: {error}") from error

    async def get(self, bucket: Bucket, path: str) -> bytes:
        file = self.file_path(bucket, path)
        try:
            return await asyncio.to_thread(file.read_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"{bucket.value}/{path}") from None
        except OSError as error:
            raise ObjectStoreUnavailable(str(error)) from error

    async def stream(self, bucket: Bucket, path: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        file = self.file_path(bucket, path)
        try:
            handle = await asyncio.to_thread(open, file, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"{bucket.value}/{path}") from None
        except OSError as error:
            raise ObjectStoreUnavailable(str(error)) from error
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()

    async def head(self, bucket: Bucket, path: str) -> ObjectInfo:
        return self.info(bucket, path)

    async def copy(self, bucket: Bucket, path: str, *, to_bucket: Bucket, to_path: str) -> ObjectInfo:
        source = self.file_path(bucket, path)
        target = self.file_path(to_bucket, to_path)
        return await asyncio.to_thread(self._copy, source, target, to_bucket, to_path)

    def _copy(self, source: Path, target: Path, to_bucket: Bucket, to_path: str) -> ObjectInfo:
        try:
            if not source.is_file():
                raise ObjectNotFound(str(source.relative_to(self.root)))
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.root / _TMP / f"copy-{os.urandom(8).hex()}"
            try:
                try:
                    os.link(source, temporary)
                except OSError as error:
                    if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                        raise
                    self._copy_bytes(source, temporary)
                os.replace(temporary, target)
            except FileNotFoundError:
                _unlink_quietly(temporary)
                raise ObjectNotFound(str(source.relative_to(self.root))) from None
            except BaseException:
                _unlink_quietly(temporary)
                raise
            return _info(to_bucket, to_path, target.stat())
        except ObjectNotFound:
            raise
        except OSError as error:
            raise ObjectStoreUnavailable(f"cannot copy to {to_bucket.value}/{to_path}: {error}") from error

    @staticmethod
    def _copy_bytes(source: Path, temporary: Path) -> None:
        with open(source, "rb") as reader, open(temporary, "wb") as writer:
            while chunk := reader.read(1024 * 1024):
                writer.write(chunk)
            writer.flush()
            os.fsync(writer.fileno())

    async def delete(self, bucket: Bucket, path: str) -> None:
        file = self.file_path(bucket, path)
        try:
            file.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as error:
            raise ObjectStoreUnavailable(str(error)) from error
        self._prune_empty_folders(file.parent, stop=self.root / bucket.value)

    @staticmethod
    def _prune_empty_folders(folder: Path, *, stop: Path) -> None:
        while folder != stop and stop in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty, or already gone: either way, stop here
                return
            folder = folder.parent

    async def list_objects(self, bucket: Bucket, prefix: str = "") -> list[ObjectInfo]:
        return await asyncio.to_thread(self._list, bucket, prefix)

    def _list(self, bucket: Bucket, prefix: str) -> list[ObjectInfo]:
        bucket_root = self.root / bucket.value
        folder_part = prefix.rpartition("/")[0]
        start = bucket_root / check_path(folder_part) if folder_part else bucket_root
        found: list[ObjectInfo] = []
        for directory, _folders, files in os.walk(start):
            relative = os.path.relpath(directory, bucket_root)
            for name in files:
                path = name if relative == "." else f"{relative}/{name}"
                if path.startswith(prefix):
                    try:
                        found.append(_info(bucket, path, os.stat(os.path.join(directory, name))))
                    except FileNotFoundError:  # deleted while we walked
                        continue
        found.sort(key=lambda info: info.path)
        return found

    def sign(self, bucket: Bucket, path: str, *, issued_at: int, expires_at: int) -> str:
        key = f"{bucket.value}/{path}"
        token = self.tokens.encode(key, issued_at=issued_at, expires_at=expires_at)
        return f"{self._sign_base}{quote(key, safe='/')}?token={token}"

    def signing_identity(self) -> Hashable:
        return None  # the token key is fixed for the store's life

    async def close(self) -> None:
        return None


def _info(bucket: Bucket, path: str, stat: os.stat_result) -> ObjectInfo:
    # Objects are replaced by rename, never rewritten: a new inode or mtime means new content.
    tag = hashlib.md5(f"{stat.st_ino}-{stat.st_mtime_ns}-{stat.st_size}".encode(), usedforsecurity=False).hexdigest()
    return ObjectInfo(
        bucket=bucket,
        path=path,
        size=stat.st_size,
        content_type=content_type_for(path),
        etag=f'"{tag}"',
        last_modified=datetime.fromtimestamp(stat.st_mtime, UTC),
    )


def _unlink_quietly(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
