"""Ids at the GraphQL edge: a client's ``ID`` becomes a UUID here, so resolvers never see the string."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import strawberry

from resolvers.errors import BadUserInput

# A UUID is 36 characters (45 as urn:uuid:{...}); a longer id is refused before it is read.
MAX_ID_LENGTH = 64

# Ids as arguments, described once.
CharacterId = Annotated[strawberry.ID, strawberry.argument(description="The character's id (a UUID).")]
JobId = Annotated[strawberry.ID, strawberry.argument(description="The job's id (a UUID).")]
LibraryAssetId = Annotated[strawberry.ID, strawberry.argument(description="The library asset's id (a UUID).")]


def parse_id(value: strawberry.ID, *, field: str = "id") -> UUID:
    """Our ids are UUIDs; anything else is a malformed id (BAD_USER_INPUT naming ``field``), not a missing one."""
    if len(value) > MAX_ID_LENGTH:
        raise BadUserInput(f"{field} is not a valid id", field=field)
    try:
        return UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise BadUserInput(f"{field} is not a valid id", field=field) from None


def parse_optional_id(value: strawberry.ID | None, *, field: str) -> UUID | None:
    """``parse_id`` for an optional argument or input field: null stays None."""
    return None if value is None else parse_id(value, field=field)
