"""Character queries and mutations, over the viewer and storage only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from uuid import UUID

import asyncpg

from resolvers.errors import BadUserInput, NotFound
from resolvers.pagination import Page, decode_cursor, make_page, page_size
from resolvers.images import clean_image_reference
from resolvers.validation import clean_json_object, clean_tags, clean_text, parse_id
from resolvers.viewer import Viewer
from storage import characters
from storage.characters import Character
from storage.database import acquire, transaction

# The bounds the README documents; the database checks name and description again.
NAME_MAX = 100
DESCRIPTION_MAX = 4000
TRAITS_MAX = 1000
PERSONA_MAX = 4000
GENDER_MAX = 50
TAGS_MAX_COUNT = 30
TAG_MAX = 50
SCENE_RULES_MAX_BYTES = 16 * 1024
SCENE_RULES_MAX_DEPTH = 10
CONTENT_RATINGS = ("sfw", "nsfw")

NOT_FOUND_MESSAGE = "Character not found"


def clean_character_fields(fields: Mapping[str, Any], *, partial: bool, owner_id: UUID) -> dict[str, Any]:
    """Validate client-given columns; with ``partial`` only the given ones, else name and description too."""
    cleaned: dict[str, Any] = {}
    for column in ("name", "description"):
        if column in fields or not partial:
            value = fields.get(column)
            if value is None:
                raise BadUserInput(f"{column} is required", field=column)
            limit = NAME_MAX if column == "name" else DESCRIPTION_MAX
            cleaned[column] = clean_text(value, field=column, max_length=limit, required=True)
    for column, limit in (("traits", TRAITS_MAX), ("persona", PERSONA_MAX), ("gender", GENDER_MAX)):
        if column in fields:
            value = fields[column]
            cleaned[column] = None if value is None else clean_text(value, field=column, max_length=limit, required=False)
    if "appearance_tags" in fields:
        tags = fields["appearance_tags"] or []
        cleaned["appearance_tags"] = clean_tags(tags, field="appearance_tags", max_count=TAGS_MAX_COUNT, max_length=TAG_MAX)
    if "content_rating" in fields:
        rating = fields["content_rating"]
        if rating not in CONTENT_RATINGS:
            raise BadUserInput("content_rating must be sfw or nsfw", field="content_rating")
        cleaned["content_rating"] = rating
    if "scene_behavior_rules" in fields:
        rules = fields["scene_behavior_rules"]
        cleaned["scene_behavior_rules"] = None if rules is None else clean_json_object(
            rules, field="scene_behavior_rules", max_bytes=SCENE_RULES_MAX_BYTES, max_depth=SCENE_RULES_MAX_DEPTH
        )
    for column in ("image_url", "reference_image_url"):
        if column in fields:
            url = fields[column]
            cleaned[column] = (
                None if url is None or not url.strip() else clean_image_reference(url, field=column, owner_id=owner_id)
            )
    return cleaned


async def get_character(
    load: Callable[[UUID], Awaitable[Character | None]], *, character_id: str
) -> Character:
    """The viewer's character through ``load`` (a per-request loader that filters by the viewer).

    Another user's character gives the same NOT_FOUND as a missing one.
    """
    character = await load(parse_id(character_id))
    if character is None:
        raise NotFound(NOT_FOUND_MESSAGE)
    return character


async def load_characters(pool: asyncpg.Pool, viewer: Viewer, character_ids: Sequence[UUID]) -> list[Character | None]:
    """For a data loader: one query for many ids, None where the viewer has no such character."""
    async with acquire(pool) as connection:
        found = await characters.get_many(connection, user_id=viewer.user_id, character_ids=set(character_ids))
    by_id = {character.id: character for character in found}
    return [by_id.get(character_id) for character_id in character_ids]


async def list_characters(pool: asyncpg.Pool, viewer: Viewer, *, first: int | None, after: str | None) -> Page[Character]:
    size = page_size(first)
    key = decode_cursor(after)
    async with acquire(pool) as connection:
        rows = await characters.list(connection, user_id=viewer.user_id, limit=size + 1, after=key)
    return make_page(rows, size=size, after=key, sort_key=lambda character: character.sort_key)


async def create_character(pool: asyncpg.Pool, viewer: Viewer, *, fields: Mapping[str, Any]) -> Character:
    values = clean_character_fields(fields, partial=False, owner_id=viewer.user_id)
    async with transaction(pool) as connection:
        return await characters.create(connection, user_id=viewer.user_id, values=values)


async def update_character(
    pool: asyncpg.Pool, viewer: Viewer, *, character_id: str, fields: Mapping[str, Any]
) -> Character:
    """A partial update: only the given fields change; null clears an optional one."""
    key = parse_id(character_id)
    changes = clean_character_fields(fields, partial=True, owner_id=viewer.user_id)
    async with transaction(pool) as connection:
        if changes:
            character = await characters.update(connection, user_id=viewer.user_id, character_id=key, changes=changes)
        else:
            character = await characters.get(connection, user_id=viewer.user_id, character_id=key)
    if character is None:
        raise NotFound(NOT_FOUND_MESSAGE)
    return character


async def delete_character(pool: asyncpg.Pool, viewer: Viewer, *, character_id: str) -> UUID:
    key = parse_id(character_id)
    async with transaction(pool) as connection:
        deleted = await characters.delete(connection, user_id=viewer.user_id, character_id=key)
    if not deleted:
        raise NotFound(NOT_FOUND_MESSAGE)
    return key
