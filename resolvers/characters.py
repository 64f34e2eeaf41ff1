"""Character queries and mutations, over the viewer and storage only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from uuid import UUID

import asyncpg

from resolvers.errors import BadUserInput, NotFound
from resolvers.images import clean_image_reference
from resolvers.pagination import Page, decode_cursor, make_page, page_size
from resolvers.validation import clean_json_object, clean_tags, clean_text
from resolvers.viewer import Viewer
from storage import characters, jobs, user_library, workspace_assets
from storage.characters import ALL_COLUMNS, EVERY_CHARACTER, Character, CharacterFields, CharacterFilter
from storage.database import Connection, acquire, transaction
from storage.enums import AssetType, CharacterOrder, ContentRating, JobStatus

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
# A name search longer than any name could match nothing.
SEARCH_MAX = NAME_MAX

NOT_FOUND_MESSAGE = "Character not found"


def clean_character_fields(fields: Mapping[str, Any], *, partial: bool, owner_id: UUID) -> CharacterFields:
    """Validate client-given columns; with ``partial`` only the given ones, else name and description too.

    ``fields`` holds what the client sent (an omitted field is absent, null is None), checked in the
    schema's order so the first bad field is the one reported.
    """
    cleaned: CharacterFields = {}
    if "name" in fields or not partial:
        cleaned["name"] = _required_text(fields, "name", NAME_MAX)
    if "description" in fields or not partial:
        cleaned["description"] = _required_text(fields, "description", DESCRIPTION_MAX)
    if "traits" in fields:
        cleaned["traits"] = _optional_text(fields["traits"], "traits", TRAITS_MAX)
    if "persona" in fields:
        cleaned["persona"] = _optional_text(fields["persona"], "persona", PERSONA_MAX)
    if "gender" in fields:
        cleaned["gender"] = _optional_text(fields["gender"], "gender", GENDER_MAX)
    if "appearance_tags" in fields:
        tags = fields["appearance_tags"] or []
        cleaned["appearance_tags"] = clean_tags(
            tags, field="appearance_tags", max_count=TAGS_MAX_COUNT, max_length=TAG_MAX
        )
    if "content_rating" in fields:
        try:
            cleaned["content_rating"] = ContentRating(fields["content_rating"])
        except ValueError:
            raise BadUserInput("content_rating must be sfw or nsfw", field="content_rating") from None
    if "scene_behavior_rules" in fields:
        rules = fields["scene_behavior_rules"]
        cleaned["scene_behavior_rules"] = None if rules is None else clean_json_object(
            rules, field="scene_behavior_rules", max_bytes=SCENE_RULES_MAX_BYTES, max_depth=SCENE_RULES_MAX_DEPTH
        )
    if "image_url" in fields:
        cleaned["image_url"] = _image_reference(fields["image_url"], "image_url", owner_id)
    if "reference_image_url" in fields:
        cleaned["reference_image_url"] = _image_reference(
            fields["reference_image_url"], "reference_image_url", owner_id
        )
    return cleaned


def _required_text(fields: Mapping[str, Any], column: str, limit: int) -> str:
    value = fields.get(column)
    if value is None:
        raise BadUserInput(f"{column} is required", field=column)
    return clean_text(value, field=column, max_length=limit, required=True)


def _optional_text(value: str | None, column: str, limit: int) -> str | None:
    return None if value is None else clean_text(value, field=column, max_length=limit, required=False)


def _image_reference(url: str | None, column: str, owner_id: UUID) -> str | None:
    """A blank URL clears the image, as null does."""
    return None if url is None or not url.strip() else clean_image_reference(url, field=column, owner_id=owner_id)


async def get_character(load: Callable[[UUID], Awaitable[Character | None]], *, character_id: UUID) -> Character:
    """The viewer's character through ``load`` (a per-request loader that filters by the viewer).

    Another user's character gives the same NOT_FOUND as a missing one.
    """
    character = await load(character_id)
    if character is None:
        raise NotFound(NOT_FOUND_MESSAGE)
    return character


async def load_characters(
    pool: asyncpg.Pool, viewer: Viewer, character_ids: Sequence[UUID], columns: frozenset[str] = ALL_COLUMNS
) -> list[Character | None]:
    """For a data loader: one query for many ids, None where the viewer has no such character.

    ``columns`` are the Character attributes the caller reads (storage adds the id).
    """
    async with acquire(pool) as connection:
        found = await characters.get_many(
            connection, user_id=viewer.user_id, character_ids=set(character_ids), columns=columns
        )
    by_id = {character.id: character for character in found}
    return [by_id.get(character_id) for character_id in character_ids]


def character_filter(*, search: str | None, content_rating: ContentRating | None) -> CharacterFilter:
    """The listing's filter: ``search`` trimmed, at most ``SEARCH_MAX`` characters; a blank one searches nothing."""
    if search is None and content_rating is None:
        return EVERY_CHARACTER
    if search is not None:
        search = clean_text(search, field="search", max_length=SEARCH_MAX, required=False)
    return CharacterFilter(name_contains=search, content_rating=content_rating)


def _order_tag(order: CharacterOrder) -> str | None:
    """Cursors of the default order are untagged, as every list's were before orderBy existed."""
    return None if order is CharacterOrder.CREATED_AT_DESC else order.name


async def list_characters(
    pool: asyncpg.Pool,
    viewer: Viewer,
    *,
    first: int | None,
    after: str | None,
    order: CharacterOrder = CharacterOrder.CREATED_AT_DESC,
    only: CharacterFilter = EVERY_CHARACTER,
    columns: frozenset[str] = ALL_COLUMNS,
    with_cursors: bool = True,
) -> Page[Character]:
    """A page of the viewer's characters matching ``only`` in ``order``; a cursor of another order is refused.

    ``columns`` are the Character attributes the caller reads (storage adds the id; the order's time is added here
    when cursors are made); ``with_cursors`` False when no cursor is shown.
    """
    size = page_size(first)
    key = decode_cursor(after, _order_tag(order))
    if with_cursors:
        columns = columns | characters.ORDER_KEYS[order]
    async with acquire(pool) as connection:
        rows = await characters.list_page(
            connection, user_id=viewer.user_id, limit=size + 1, after=key, order=order, only=only, columns=columns
        )
    by_updated = order in (CharacterOrder.UPDATED_AT_DESC, CharacterOrder.UPDATED_AT_ASC)
    return make_page(
        rows, size=size, after=key, order=_order_tag(order), with_cursors=with_cursors,
        sort_key=lambda c: (c.updated_at if by_updated else c.created_at, c.id),
    )


async def count_characters(pool: asyncpg.Pool, viewer: Viewer, *, only: CharacterFilter = EVERY_CHARACTER) -> int:
    """How many of the viewer's characters match ``only``: ``characters``' totalCount."""
    async with acquire(pool) as connection:
        return await characters.count(connection, user_id=viewer.user_id, only=only)


async def create_character(
    pool: asyncpg.Pool, viewer: Viewer, *, fields: Mapping[str, Any], portrait_job_id: UUID | None = None
) -> Character:
    """Store a new character; with ``portrait_job_id``, it takes that draft portrait as its own.

    The draft's portrait is then auto-saved to the library exactly as if it
    had been generated for the character (the seed loses such portraits).
    """
    values = clean_character_fields(fields, partial=False, owner_id=viewer.user_id)
    if portrait_job_id is not None and (values.get("image_url") or values.get("reference_image_url")):
        raise BadUserInput("give either portraitJobId or an image URL, not both", field="portrait_job_id")
    async with transaction(pool) as connection:
        character = await characters.create(connection, user_id=viewer.user_id, values=values)
        if portrait_job_id is None:
            return character
        await attach_draft_portrait(connection, viewer, job_id=portrait_job_id, character=character)
        refreshed = await characters.get(connection, user_id=viewer.user_id, character_id=character.id)
    assert refreshed is not None
    return refreshed


async def attach_draft_portrait(connection: Connection, viewer: Viewer, *, job_id: UUID, character: Character) -> None:
    """Give a just-created character the portrait of a draft job (inside the creating transaction).

    Locks the job first, then share-locks its workspace image, the same order
    as the worker, so neither the worker nor the sweeper can slip in between.
    """
    job = await jobs.get_for_update(connection, user_id=viewer.user_id, job_id=job_id)
    if job is None:
        raise NotFound("Portrait job not found", field="portrait_job_id")
    if not job.is_draft:
        raise BadUserInput("that job is not a draft character portrait", field="portrait_job_id")
    if job.character_id is not None:
        raise BadUserInput("that portrait already belongs to a character", field="portrait_job_id")
    if job.status in (JobStatus.FAILED, JobStatus.CANCELED):
        raise BadUserInput(f"that portrait job {job.status}; generate a new one", field="portrait_job_id")
    asset = await workspace_assets.get_by_job_for_share(connection, user_id=viewer.user_id, job_id=job.id)
    if asset is not None:
        await characters.set_portrait(
            connection, user_id=viewer.user_id, character_id=character.id,
            image_url=asset.image_key, seed_locked=asset.generation_seed,
        )
    elif job.status is JobStatus.COMPLETED:
        raise BadUserInput("that portrait has expired from the workspace; generate a new one", field="portrait_job_id")
    await jobs.attach_character(
        connection, user_id=viewer.user_id, job_id=job.id, character_id=character.id, character_name=character.name
    )


async def update_character(
    pool: asyncpg.Pool, viewer: Viewer, *, character_id: UUID, fields: Mapping[str, Any]
) -> Character:
    """A partial update: only the given fields change; null clears an optional one."""
    changes = clean_character_fields(fields, partial=True, owner_id=viewer.user_id)
    async with transaction(pool) as connection:
        if changes:
            character = await characters.update(
                connection, user_id=viewer.user_id, character_id=character_id, changes=changes
            )
        else:
            character = await characters.get(connection, user_id=viewer.user_id, character_id=character_id)
    if character is None:
        raise NotFound(NOT_FOUND_MESSAGE)
    return character


async def delete_character(pool: asyncpg.Pool, viewer: Viewer, *, character_id: UUID) -> UUID:
    async with transaction(pool) as connection:
        deleted = await characters.delete(connection, user_id=viewer.user_id, character_id=character_id)
    if not deleted:
        raise NotFound(NOT_FOUND_MESSAGE)
    return character_id


LIBRARY_ASSET_NOT_FOUND = "Library asset not found"


async def set_reference_image(
    pool: asyncpg.Pool, viewer: Viewer, *, character_id: UUID, library_asset_id: UUID
) -> Character:
    """Make one of the viewer's library images the character's reference, and lock that image's seed.

    The reference is stored as the asset's own path ("user-library/..."), never a URL a client gave, so
    what a model is later handed is always an object of the owner's. Another user's character or asset
    is NOT_FOUND, as a missing one.
    """
    async with transaction(pool) as connection:
        if await characters.get(connection, user_id=viewer.user_id, character_id=character_id) is None:
            raise NotFound(NOT_FOUND_MESSAGE, field="character_id")
        asset = await user_library.get_for_share(connection, user_id=viewer.user_id, asset_id=library_asset_id)
        if asset is None:
            raise NotFound(LIBRARY_ASSET_NOT_FOUND, field="library_asset_id")
        if asset.asset_type is not AssetType.IMAGE:
            raise BadUserInput("a reference must be an image", field="library_asset_id")
        if asset.image_key not in asset.stored_keys:
            raise BadUserInput("that library image is no longer stored", field="library_asset_id")
        character = await characters.set_reference(
            connection, user_id=viewer.user_id, character_id=character_id,
            image_key=asset.image_key, seed_locked=asset.generation_seed,
        )
    if character is None:
        raise NotFound(NOT_FOUND_MESSAGE, field="character_id")
    return character
