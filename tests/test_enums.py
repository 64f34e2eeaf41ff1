"""Each closed set is defined once (storage/enums.py): the database's CHECKs and the GraphQL enums agree with it."""

from __future__ import annotations

import re
from enum import StrEnum

import asyncpg
import pytest
from strawberry.types.enum import StrawberryEnumDefinition

from graph.schema import schema
from storage.enums import (
    AssetType,
    ContentRating,
    JobAttemptOutcome,
    JobDestination,
    JobStatus,
    LibraryTab,
    Provider,
    ProviderStatus,
    Quality,
    provider_status,
)

CHECKED = [
    ("jobs_status_check", JobStatus),
    ("jobs_destination_check", JobDestination),
    ("jobs_quality_check", Quality),
    ("characters_content_rating_check", ContentRating),
    ("image_models_provider_check", Provider),
    ("job_attempts_outcome_check", JobAttemptOutcome),
    ("workspace_assets_asset_type_check", AssetType),
    ("user_library_asset_type_check", AssetType),
]


@pytest.mark.parametrize(("constraint", "enum"), CHECKED, ids=[name for name, _ in CHECKED])
async def test_the_database_checks_the_same_values_as_the_enum(
    pool: asyncpg.Pool, constraint: str, enum: type[StrEnum]
) -> None:
    definition = await pool.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1 AND contype = 'c'", constraint
    )
    assert definition is not None, f"no CHECK named {constraint}"
    assert set(re.findall(r"'([^']*)'", definition)) == {member.value for member in enum}


GRAPHQL_ENUMS = [
    JobStatus, JobDestination, JobAttemptOutcome, Quality, ContentRating, LibraryTab,
    Provider, ProviderStatus, AssetType,
]


@pytest.mark.parametrize("enum", GRAPHQL_ENUMS)
def test_graphql_shows_the_enum_under_its_own_name_with_its_members_names(enum: type[StrEnum]) -> None:
    shown = schema.get_type_by_name(enum.__name__)
    assert isinstance(shown, StrawberryEnumDefinition)
    assert shown.wrapped_cls is enum
    assert [value.name for value in shown.values] == [member.name for member in enum]


def test_a_provider_word_we_do_not_know_reads_as_in_progress() -> None:
    """Given the words a provider may store, when read, then the known ones keep their member and any other is
    IN_PROGRESS (ProviderProgress.status never fails to serialize)."""
    assert [provider_status(word) for word in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED", "WARMING_UP")] == [
        ProviderStatus.IN_QUEUE, ProviderStatus.IN_PROGRESS, ProviderStatus.COMPLETED, ProviderStatus.IN_PROGRESS,
    ]
