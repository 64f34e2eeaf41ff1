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


class JobAttemptOutcome(StrEnum):
    """job_attempts.outcome: how one worker's run of a job ended (a CHECK constraint holds the same seven)."""

    RUNNING = "running"
    COMPLETED = "completed"
    # The attempt's error; job_attempts.retryable says whether another attempt could succeed.
    FAILED = "failed"
    # By the job's owner, while it ran.
    CANCELED = "canceled"
    # The lease ran out while its worker still ran the job (slow, or cut off from the database):
    # what an abandoned attempt becomes when its worker finds out.
    LEASE_LOST = "lease_lost"
    # Its lease ran out and another worker claimed the job again (its worker died, or has not found out yet).
    ABANDONED = "abandoned"
    # Its worker stopped and handed the job back to the queue untouched (not counted in jobs.attempts).
    RELEASED = "released"


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
    REPLICATE = "replicate"


class ProviderStatus(StrEnum):
    """jobs.provider_status: where the provider has the request, in fal's words (the local provider uses them too).

    The column is written as the provider words it (unchecked: fal may add a
    word); ``provider_status`` reads one we do not know as IN_PROGRESS.
    """

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"


def provider_status(word: str) -> ProviderStatus:
    """The stored word as a member; an unknown one is IN_PROGRESS (the request is neither waiting nor done)."""
    try:
        return ProviderStatus(word)
    except ValueError:
        return ProviderStatus.IN_PROGRESS


class AssetType(StrEnum):
    """workspace_assets.asset_type and user_library.asset_type (CHECKs hold the same two)."""

    IMAGE = "image"
    # Reserved by the seed's schema; nothing makes one yet.
    VIDEO = "video"


class CharacterOrder(StrEnum):
    """How a character listing is ordered: by which time, which way (ties broken by id, the same way)."""

    CREATED_AT_DESC = "created_at_desc"
    CREATED_AT_ASC = "created_at_asc"
    UPDATED_AT_DESC = "updated_at_desc"
    UPDATED_AT_ASC = "updated_at_asc"
