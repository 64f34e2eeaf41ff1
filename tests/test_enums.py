"""Each closed set is defined once (storage/enums.py): the database's CHECKs and the GraphQL enums agree with it."""

from __future__ import annotations

import re
from enum import StrEnum

import asyncpg
import pytest
from strawberry.types.enum import StrawberryEnumDefinition

from graph.schema import schema
from storage.enums import ContentRating, JobAttemptOutcome, JobDestination, JobStatus, LibraryTab, Provider, Quality

CHECKED = [
    ("jobs_status_check", JobStatus),
    ("jobs_destination_check", JobDestination),
    ("jobs_quality_check", Quality),
    ("characters_content_rating_check", ContentRating),
    ("image_models_provider_check", Provider),
    ("job_attempts_outcome_check", JobAttemptOutcome),
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


@pytest.mark.parametrize("enum", [JobStatus, JobDestination, JobAttemptOutcome, Quality, ContentRating, LibraryTab])
def test_graphql_shows_the_enum_under_its_own_name_with_its_members_names(enum: type[StrEnum]) -> None:
    shown = schema.get_type_by_name(enum.__name__)
    assert isinstance(shown, StrawberryEnumDefinition)
    assert shown.wrapped_cls is enum
    assert [value.name for value in shown.values] == [member.name for member in enum]
