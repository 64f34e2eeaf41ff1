"""Bucket names and object path rules, in one place.

A *key* is ``bucket/path`` (``user-library/{user_id}/{job_id}_{character_id}.png``),
the form stored in ``characters.image_url``. Every path that reaches an object
store went through ``check_path``, so none can leave its bucket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID


class Bucket(StrEnum):
    WORKSPACE_TEMP = "workspace-temp"
    USER_LIBRARY = "user-library"


# The seed's ChatMessage signs a path with no bucket prefix in user-library.
DEFAULT_BUCKET = Bucket.USER_LIBRARY

# S3 allows 1024 bytes a key; ours are far shorter, and a bound keeps file names sane.
MAX_PATH_BYTES = 512
MAX_SEGMENT_BYTES = 255
THUMBNAIL_SUFFIX = ".thumb.webp"

_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")

CONTENT_TYPES = {
    "png": "image/png",
    "webp": "image/webp",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "avif": "image/avif",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"


class InvalidObjectPath(ValueError):
    """A bucket or path breaks the rules: never stored, never signed, never served."""


@dataclass(frozen=True, slots=True)
class ObjectKey:
    bucket: Bucket
    path: str

    @property
    def key(self) -> str:
        return f"{self.bucket.value}/{self.path}"

    def is_owned_by(self, user_id: UUID) -> bool:
        return path_owned_by(self.path, user_id)


def path_owned_by(path: str, user_id: UUID) -> bool:
    """Whether ``path``'s first segment, the owner's user id in every path we write, is ``user_id``: the rule of
    ``ObjectKey.is_owned_by``, for a path in hand too (a page's catalogued keys make no ObjectKey)."""
    return path.split("/", 1)[0] == str(user_id)


@dataclass(frozen=True, slots=True)
class ExternalUrl:
    """An http(s) image hosted elsewhere: passed through unsigned."""

    url: str


def bucket_named(name: str) -> Bucket:
    try:
        return Bucket(name)
    except ValueError:
        raise InvalidObjectPath(f"no bucket named {name!r}") from None


def check_path(path: str) -> str:
    """``path`` if it stays inside its bucket, else InvalidObjectPath."""
    if not path:
        raise InvalidObjectPath("the path is empty")
    if _FORBIDDEN.search(path):
        raise InvalidObjectPath("the path holds a control character or a backslash")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidObjectPath("the path is not valid Unicode") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise InvalidObjectPath(f"the path is longer than {MAX_PATH_BYTES} bytes")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidObjectPath("the path has an empty, '.' or '..' segment (or starts or ends with '/')")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidObjectPath(f"a path segment is longer than {MAX_SEGMENT_BYTES} bytes")
    return path


def object_key(bucket: str | Bucket, path: str) -> ObjectKey:
    """A checked key; InvalidObjectPath when either part breaks the rules."""
    return ObjectKey(bucket if isinstance(bucket, Bucket) else bucket_named(bucket), check_path(path))


def parse_key(key: str) -> ObjectKey:
    """``bucket/path`` as stored in the catalog."""
    bucket, _, path = key.partition("/")
    return object_key(bucket, path)


def parse_image_reference(value: str | None) -> ObjectKey | ExternalUrl | None:
    """The seed's rules for what ``characters.image_url`` holds.

    ``http(s)://...`` is external; ``user-library/...`` and ``workspace-temp/...``
    are keys in their bucket; any other non-empty value is a path in the default
    bucket. InvalidObjectPath when a path breaks the rules.
    """
    if value is None or not value.strip():
        return None
    lowered = value[:8].lower()
    if lowered.startswith(("http://", "https://")):
        return ExternalUrl(value)
    head, separator, rest = value.partition("/")
    if separator:
        for bucket in Bucket:
            if head == bucket.value:
                return ObjectKey(bucket, check_path(rest))
    return ObjectKey(DEFAULT_BUCKET, check_path(value))


def content_type_for(path: str) -> str:
    """The Content-Type both backends store and serve, from the file extension."""
    _, dot, extension = path.rpartition(".")
    return CONTENT_TYPES.get(extension.lower(), DEFAULT_CONTENT_TYPE) if dot else DEFAULT_CONTENT_TYPE


def extension_for(content_type: str) -> str:
    """The file extension we store an image type under (``image/jpeg`` -> ``jpg``); png when unknown."""
    for extension, known in CONTENT_TYPES.items():
        if known == content_type:
            return extension
    return "png"


def workspace_image_path(*, user_id: UUID, job_id: UUID, timestamp_ms: int, extension: str = "png") -> str:
    """``{user_id}/{job_id}_{timestamp}.png`` in workspace-temp (seed, phase 2)."""
    return f"{user_id}/{job_id}_{timestamp_ms}.{extension}"


def library_image_path(*, user_id: UUID, job_id: UUID, character_id: UUID | None, extension: str = "png") -> str:
    """``{user_id}/{job_id}_{character_id}.png`` in user-library (seed, phase 3).

    ``{user_id}/{job_id}.png`` without a character.
    """
    stem = f"{job_id}_{character_id}" if character_id is not None else f"{job_id}"
    return f"{user_id}/{stem}.{extension}"


def thumbnail_path(image_path: str) -> str:
    """``x.png`` -> ``x.thumb.webp``, beside its image."""
    stem, dot, _ = image_path.rpartition(".")
    return f"{stem if dot else image_path}{THUMBNAIL_SUFFIX}"
