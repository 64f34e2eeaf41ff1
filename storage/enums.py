"""The closed sets of values kept in text columns, defined once for every layer.

Each member is the stored string itself (``StrEnum``): asyncpg sends it as
text, and it compares and hashes like the string a change notice carries.
Rows come out of storage with these members; graph/ exposes the same classes
as GraphQL enums (``strawberry.enum``), so a value has one name everywhere.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """jobs.status (a CHECK constraint holds the same five)."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


ACTIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.PROCESSING})
FINISHED_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED})


class JobDestination(StrEnum):
    """jobs.destination: a character's portrait, or a free-form workspace image."""

    CHARACTER_PORTRAIT = "character_portrait"
    WORKSPACE = "workspace"


class Quality(StrEnum):
    """jobs.quality: what the provider is asked for."""

    HIGH = "high"
    FAST = "fast"


class ContentRating(StrEnum):
    """characters.content_rating (a CHECK constraint holds the same two)."""

    SFW = "sfw"
    NSFW = "nsfw"


class LibraryTab(StrEnum):
    """Which library rows a listing shows: all, or the seed's characters tab."""

    ALL = "all"
    CHARACTERS = "characters"


class Provider(StrEnum):
    """image_models.provider: which image provider runs a model's jobs."""

    LOCAL = "local"
    FAL = "fal"
