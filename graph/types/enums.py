"""The stored enums (storage/enums.py) as GraphQL enums: the same classes, so a value has one name everywhere.

``strawberry.enum`` registers each class in place; graph modules import the
enums from here, so the registration has run before any type names them.
Each value's description is given here, beside the enum's (storage/ knows
nothing of GraphQL): ``graphql_enum`` fails at import when one is missing or
names no member.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import StrEnum

import strawberry
from strawberry.types.enum import has_enum_definition

from storage.enums import (
    AssetType,
    CharacterOrder,
    ContentRating,
    JobAttemptOutcome,
    JobDestination,
    JobStatus,
    LibraryTab,
    Provider,
    ProviderStatus,
    Quality,
)


def graphql_enum(cls: type[StrEnum], description: str, values: Mapping[str, str]) -> None:
    """Register ``cls`` as a GraphQL enum with ``description``, each value described by ``values[member name]``."""
    strawberry.enum(cls, description=description)
    if set(values) != set(cls.__members__):
        raise ValueError(f"{cls.__name__}: describe exactly its values {sorted(cls.__members__)}, not {sorted(values)}")
    assert has_enum_definition(cls)
    definition = cls.__strawberry_definition__
    definition.values = [dataclasses.replace(value, description=values[value.name]) for value in definition.values]


graphql_enum(
    JobStatus,
    "Where a job is: queued, processing, then completed, failed or canceled.",
    {
        "QUEUED": "Waiting for a worker (or for its next attempt after a retryable failure).",
        "PROCESSING": "A worker is generating and storing the image.",
        "COMPLETED": "Final: the image is stored (workspaceAsset; libraryAsset for a character portrait).",
        "FAILED": "Final: no attempt succeeded; error says why.",
        "CANCELED": "Final: canceled by you (cancelJob).",
    },
)
graphql_enum(
    JobDestination,
    "What the image is for.",
    {
        "CHARACTER_PORTRAIT": "A character's portrait (or a draft's): auto-saved to the library and set as its image.",
        "WORKSPACE": "A free-form image kept in workspace-temp until it expires, unless saved to the library.",
    },
)
graphql_enum(
    JobAttemptOutcome,
    "How one attempt at a job ended: RUNNING until it ends; COMPLETED; FAILED (see retryable); CANCELED by you;"
    " ABANDONED (its worker stopped renewing the lease and the job was claimed again) or LEASE_LOST (the same,"
    " its worker still running); RELEASED (its worker stopped and handed the job back to the queue).",
    {
        "RUNNING": "The attempt is running now.",
        "COMPLETED": "The attempt stored the image.",
        "FAILED": "The attempt failed; retryable says whether another could succeed.",
        "CANCELED": "You canceled the job while this attempt ran.",
        "LEASE_LOST": "Its worker was too slow to renew its lease (or cut off from the database) and gave up.",
        "ABANDONED": "Its worker stopped renewing its lease and another claimed the job.",
        "RELEASED": "Its worker stopped and handed the job back untouched; not counted in Job.attempts.",
    },
)
graphql_enum(
    Quality,
    "Generation quality: high (the seed's default) or fast.",
    {
        "HIGH": "Detail over speed (the default).",
        "FAST": "Speed over detail, as the seed's fast setting; kept with the job and its images' settings.",
    },
)
graphql_enum(
    ContentRating,
    "Who the character is suitable for.",
    {"SFW": "Safe for work: anyone (the default).", "NSFW": "Adults only."},
)
graphql_enum(
    LibraryTab,
    "Which library images to list: everything, or the seed's characters tab.",
    {
        "ALL": "Every image in your library.",
        "CHARACTERS": "Character portraits, and images tagged or categorised 'character'.",
    },
)
graphql_enum(
    Provider,
    "Which image provider runs a model's jobs.",
    {
        "LOCAL": "The server's own renderer: always available.",
        "FAL": "fal.ai's queue API: available only on a server configured with a fal key (FAL_KEY).",
        "REPLICATE": "Replicate's predictions API: available only on a server configured with a Replicate API "
        "token (REPLICATE_API_TOKEN).",
    },
)
graphql_enum(
    ProviderStatus,
    "Where the image provider has the request, in fal's words (the local provider uses them too).",
    {
        "IN_QUEUE": "Waiting in the provider's queue; queuePosition says where, when the provider tells.",
        "IN_PROGRESS": "Being generated (a word of the provider's we do not know is shown as this too).",
        "COMPLETED": "The provider has the image; the job completes once it is stored.",
    },
)
graphql_enum(
    AssetType,
    "What a stored file is.",
    {"IMAGE": "An image (every asset today).", "VIDEO": "A video: reserved, nothing makes one yet."},
)
graphql_enum(
    CharacterOrder,
    "The order characters are listed in: by creation or last change, newest or oldest first (ties by id).",
    {
        "CREATED_AT_DESC": "Newest first (the default).",
        "CREATED_AT_ASC": "Oldest first.",
        "UPDATED_AT_DESC": "Most recently changed first (a change moves a character to the front).",
        "UPDATED_AT_ASC": "Least recently changed first (a change moves a character to the end: a walk through the "
        "pages under way meets it again there).",
    },
)

__all__ = [
    "AssetType",
    "CharacterOrder",
    "ContentRating",
    "JobAttemptOutcome",
    "JobDestination",
    "JobStatus",
    "LibraryTab",
    "Provider",
    "ProviderStatus",
    "Quality",
]
