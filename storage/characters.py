"""The ``characters`` table. Every query filters by the owner's user id."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from itertools import repeat
from operator import itemgetter
from typing import Any, TypedDict
from uuid import UUID

import asyncpg

from storage.database import Connection, returned
from storage.enums import CharacterOrder, ContentRating
from storage.errors import translate_errors
from storage.objects.paths import DEFAULT_BUCKET
from storage.stored_objects import present_keys_column


@dataclass(frozen=True, slots=True)
class Character:
    id: UUID
    user_id: UUID
    name: str
    description: str
    appearance_tags: tuple[str, ...]
    traits: str | None
    persona: str | None
    gender: str | None
    content_rating: ContentRating
    scene_behavior_rules: dict[str, Any] | None
    image_url: str | None
    reference_image_url: str | None
    seed_locked: int | None
    created_at: datetime
    updated_at: datetime
    # Which of image_url / reference_image_url name an object in the catalog,
    # as "bucket/path" keys: known from the same statement, so signing a page
    # of characters needs no further round trip.
    stored_image_keys: frozenset[str] = frozenset()

    @property
    def sort_key(self) -> tuple[datetime, UUID]:
        return (self.created_at, self.id)


class CharacterFields(TypedDict, total=False):
    """Columns a client may write, validated (resolvers/characters.py); ``create`` needs name and description."""

    name: str
    description: str
    appearance_tags: list[str]
    traits: str | None
    persona: str | None
    gender: str | None
    content_rating: ContentRating
    scene_behavior_rules: dict[str, Any] | None
    image_url: str | None
    reference_image_url: str | None


# In the order of UPDATE's $4 to $13; ``update`` refuses any other name.
WRITABLE_COLUMNS = tuple(CharacterFields.__annotations__)

# Both spellings of each image are probed: "bucket/path" as we write it, and a
# bare path, which means the default bucket (storage.objects.paths).
_STORED_IMAGE_KEYS = present_keys_column(
    "c.image_url",
    "c.reference_image_url",
    f"'{DEFAULT_BUCKET.value}/' || c.image_url",
    f"'{DEFAULT_BUCKET.value}/' || c.reference_image_url",
    alias="stored_image_keys",
)

# Each column's select-list expression, by Character attribute: a partial page picks from these fixed fragments.
_COLUMN_SQL = {
    "id": "c.id",
    "user_id": "c.user_id",
    "name": "c.name",
    "description": "c.description",
    "appearance_tags": "c.appearance_tags",
    "traits": "c.traits",
    "persona": "c.persona",
    "gender": "c.gender",
    "content_rating": "c.content_rating",
    "scene_behavior_rules": "c.scene_behavior_rules",
    "image_url": "c.image_url",
    "reference_image_url": "c.reference_image_url",
    "seed_locked": "c.seed_locked",
    "created_at": "c.created_at",
    "updated_at": "c.updated_at",
    "stored_image_keys": _STORED_IMAGE_KEYS,
}
# Every column; a page may ask for fewer (list_page's ``columns``).
ALL_COLUMNS = frozenset(_COLUMN_SQL)
COLUMNS = ", ".join(_COLUMN_SQL.values())

# Read as stored, except these (the same conversions as _character's).
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "appearance_tags": tuple,
    "content_rating": ContentRating,
    "stored_image_keys": frozenset,
}
_new_object = object.__new__


def _store(name: str) -> Callable[[Character, Any], None]:
    """What sets a Character's ``name`` on a new object: its slot's own setter (past the frozen dataclass's
    ``__setattr__``, as the dataclass's ``__init__`` does with ``object.__setattr__``), converting when needed."""
    store: Callable[[Character, Any], None] = vars(Character)[name].__set__
    convert = _CONVERT.get(name)
    if convert is None:
        return store
    return lambda character, value: store(character, convert(value))


def _character(row: asyncpg.Record) -> Character:
    return Character(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        description=row["description"],
        appearance_tags=tuple(row["appearance_tags"]),
        traits=row["traits"],
        persona=row["persona"],
        gender=row["gender"],
        content_rating=ContentRating(row["content_rating"]),
        scene_behavior_rules=row["scene_behavior_rules"],
        image_url=row["image_url"],
        reference_image_url=row["reference_image_url"],
        seed_locked=row["seed_locked"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        stored_image_keys=frozenset(row["stored_image_keys"]),
    )


@lru_cache(maxsize=512)
def partial_characters(names: tuple[str, ...]) -> Callable[[Sequence[asyncpg.Record]], list[Character]]:
    """What makes Characters of rows whose columns are ``names``, in order (one per statement of a column set).

    The Characters hold only those columns: the others are left unset (slots), so reading one raises
    AttributeError (a loud bug) instead of giving a wrong value. Each value goes to its slot by position, with
    no default filled in and no lookup by name. The work is done a column at a time in loops that run in C:
    the objects are made together, then each column's values are stored into them (a Python call per row, as
    this did before, cost 2.7 times as much for a page of 100). A name that is no Character attribute raises
    KeyError here.
    """
    columns = tuple((_store(name), itemgetter(index)) for index, name in enumerate(names))

    def characters(rows: Sequence[asyncpg.Record]) -> list[Character]:
        made = list(map(_new_object, repeat(Character, len(rows))))
        for store, value in columns:
            # store(character, value) for each row: every store returns None, so any() calls them all
            any(map(store, made, map(value, rows)))
        return made

    return characters


GET = f"SELECT {COLUMNS} FROM characters c WHERE c.id = $1 AND c.user_id = $2"


@translate_errors
async def get(connection: Connection, *, user_id: UUID, character_id: UUID) -> Character | None:
    """One of the user's characters, or None."""
    row = await connection.fetchrow(GET, character_id, user_id)
    return None if row is None else _character(row)


def _select_list(columns: frozenset[str]) -> str:
    """The select list of a partial statement: ``columns`` and the id, from the fixed fragments of ``_COLUMN_SQL``
    in its order, so one column set is one statement text. ValueError for a name that is no column: nothing but
    those fragments reaches the SQL."""
    unknown = columns - ALL_COLUMNS
    if unknown:
        raise ValueError(f"not a character column: {sorted(unknown)}")
    wanted = columns | _ALWAYS
    return ", ".join(sql for name, sql in _COLUMN_SQL.items() if name in wanted)


def _partial_rows(rows: Sequence[asyncpg.Record]) -> list[Character]:
    """The Characters of a partial statement's rows (``partial_characters``, by the columns the rows have)."""
    return partial_characters(tuple(rows[0].keys()))(rows) if rows else []


_GET_MANY_WHERE = "FROM characters c WHERE c.id = ANY($1::uuid[]) AND c.user_id = $2"
GET_MANY = f"SELECT {COLUMNS} {_GET_MANY_WHERE}"


@lru_cache(maxsize=512)
def partial_get_many_statement(columns: frozenset[str]) -> str:
    """``GET_MANY`` for only ``columns`` (and the id: a loader matches rows to ids by it), from the fixed fragments
    of ``_COLUMN_SQL`` in its order, as ``partial_list_statement``. ValueError for a name that is no column."""
    return f"SELECT {_select_list(columns)} {_GET_MANY_WHERE}"


@translate_errors
async def get_many(
    connection: Connection, *, user_id: UUID, character_ids: Collection[UUID], columns: frozenset[str] = ALL_COLUMNS
) -> list[Character]:
    """The user's characters among ``character_ids``, in no particular order.

    With ``columns`` fewer than all, each Character holds only those and its id: see ``partial_characters``.
    """
    if columns == ALL_COLUMNS:
        rows = await connection.fetch(GET_MANY, [*character_ids], user_id)
        return [_character(row) for row in rows]
    rows = await connection.fetch(partial_get_many_statement(columns), [*character_ids], user_id)
    return _partial_rows(rows)


@dataclass(frozen=True, slots=True)
class CharacterFilter:
    """Which of the user's characters a listing shows: all, or those matching a name search and a rating."""

    # Characters whose name contains this, case-insensitively; every character when None.
    name_contains: str | None = None
    content_rating: ContentRating | None = None

    @property
    def name_pattern(self) -> str | None:
        """An ILIKE pattern matching the text anywhere, its ``%``, ``_`` and ``\\`` literal (escaped with ``\\``,
        ILIKE's default escape)."""
        if self.name_contains is None:
            return None
        escaped = self.name_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return f"%{escaped}%"


EVERY_CHARACTER = CharacterFilter()


# The order's column, direction and keyset comparison; (user_id, created_at DESC, id DESC) and
# (user_id, updated_at DESC, id DESC) serve each order (an index reads backwards as well).
_ORDERS = {
    CharacterOrder.CREATED_AT_DESC: ("c.created_at", "DESC", "<"),
    CharacterOrder.CREATED_AT_ASC: ("c.created_at", "ASC", ">"),
    CharacterOrder.UPDATED_AT_DESC: ("c.updated_at", "DESC", "<"),
    CharacterOrder.UPDATED_AT_ASC: ("c.updated_at", "ASC", ">"),
}
# $1 user, $2 limit, $3 content rating (or null); with a search $4 is the name's pattern. A name search is its own
# statement: in one with "$4 IS NULL OR", a generic plan could not use the trigram index.
_FILTER = "c.user_id = $1 AND ($3::text IS NULL OR c.content_rating = $3)"
_SEARCH = " AND c.name ILIKE $4"


def _list_statement(order: CharacterOrder, *, search: bool, after: bool, columns: str = COLUMNS) -> str:
    column, direction, compare = _ORDERS[order]
    first_key = 5 if search else 4
    keyset = f" AND ({column}, c.id) {compare} (${first_key}, ${first_key + 1})" if after else ""
    return f"""
SELECT {columns} FROM characters c
WHERE {_FILTER}{_SEARCH if search else ""}{keyset}
ORDER BY {column} {direction}, c.id {direction}
LIMIT $2
"""


# Every full-row statement list_page may run, made once from the fixed fragments above: no SQL is assembled from
# input.
LIST = {
    (order, search, after): _list_statement(order, search=search, after=after)
    for order in CharacterOrder
    for search in (False, True)
    for after in (False, True)
}

# What a partial row always holds, whatever was selected: the id (a loader matches rows to ids by it). The owner
# is asked for by what reads it (signing's owner check: graph/types/character.py CHARACTER_COLUMNS), the order's
# time by what makes cursors (ORDER_KEYS): a timestamptz is the dearest column asyncpg decodes (about 0.6 us a
# row, 60 us of a page of 101 that shows no cursor).
_ALWAYS = frozenset({"id"})
# The columns of each order's keyset (time, id): what a page needs to make its cursors.
ORDER_KEYS = {
    CharacterOrder.CREATED_AT_DESC: frozenset({"created_at", "id"}),
    CharacterOrder.CREATED_AT_ASC: frozenset({"created_at", "id"}),
    CharacterOrder.UPDATED_AT_DESC: frozenset({"updated_at", "id"}),
    CharacterOrder.UPDATED_AT_ASC: frozenset({"updated_at", "id"}),
}


@lru_cache(maxsize=512)
def partial_list_statement(order: CharacterOrder, search: bool, after: bool, columns: frozenset[str]) -> str:
    """The statement for a page of only ``columns`` (and the id), from the fixed fragments of ``_COLUMN_SQL`` in
    its order, so one column set is one statement text (one prepared statement per connection). ValueError for a
    name that is no column: nothing but those fragments reaches the SQL."""
    return _list_statement(order, search=search, after=after, columns=_select_list(columns))


@translate_errors
async def list_page(
    connection: Connection,
    *,
    user_id: UUID,
    limit: int,
    after: tuple[datetime, UUID] | None = None,
    order: CharacterOrder = CharacterOrder.CREATED_AT_DESC,
    only: CharacterFilter = EVERY_CHARACTER,
    columns: frozenset[str] = ALL_COLUMNS,
) -> list[Character]:
    """The user's characters matching ``only``, in ``order``, after the given (time, id) key of that order.

    With ``columns`` fewer than all, each Character holds only those and its id (ORDER_KEYS: what cursors need):
    see ``partial_characters``.
    """
    pattern = only.name_pattern
    partial = columns != ALL_COLUMNS
    if partial:
        statement = partial_list_statement(order, pattern is not None, after is not None, columns)
    else:
        statement = LIST[order, pattern is not None, after is not None]
    arguments: list[object] = [user_id, limit, only.content_rating]
    if pattern is not None:
        arguments.append(pattern)
    if after is not None:
        arguments += after
    rows = await connection.fetch(statement, *arguments)
    if partial:
        return _partial_rows(rows)
    return [_character(row) for row in rows]


COUNT = "SELECT count(*) FROM characters c WHERE c.user_id = $1 AND ($2::text IS NULL OR c.content_rating = $2)"
COUNT_SEARCH = f"{COUNT} AND c.name ILIKE $3"


@translate_errors
async def count(connection: Connection, *, user_id: UUID, only: CharacterFilter = EVERY_CHARACTER) -> int:
    """How many of the user's characters match ``only`` (a connection's totalCount)."""
    pattern = only.name_pattern
    if pattern is None:
        total: int = await connection.fetchval(COUNT, user_id, only.content_rating)
    else:
        total = await connection.fetchval(COUNT_SEARCH, user_id, only.content_rating, pattern)
    return total


LIST_CHANGED_SINCE = f"""
SELECT {COLUMNS} FROM characters c
WHERE c.user_id = $1 AND c.updated_at >= $2
ORDER BY c.updated_at DESC
LIMIT $3
"""


@translate_errors
async def list_changed_since(
    connection: Connection, *, user_id: UUID, since: datetime, limit: int
) -> list[Character]:
    """The user's characters updated at or after ``since``, most recent first (a subscription's resync)."""
    return [_character(row) for row in await connection.fetch(LIST_CHANGED_SINCE, user_id, since, limit)]


CREATE = f"""
INSERT INTO characters AS c (user_id, name, description, appearance_tags, traits, persona, gender, content_rating,
    scene_behavior_rules, image_url, reference_image_url)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING {COLUMNS}
"""


@translate_errors
async def create(connection: Connection, *, user_id: UUID, values: CharacterFields) -> Character:
    """Insert a character from ``values`` (name and description required)."""
    row = await connection.fetchrow(
        CREATE,
        user_id,
        values["name"],
        values["description"],
        values.get("appearance_tags") or [],
        values.get("traits"),
        values.get("persona"),
        values.get("gender"),
        values.get("content_rating", ContentRating.SFW),
        values.get("scene_behavior_rules"),
        values.get("image_url"),
        values.get("reference_image_url"),
    )
    return _character(returned(row))


# One static statement for any partial update: $3 lists the columns to set,
# the others keep their value. No SQL is assembled from input.
UPDATE = f"""
UPDATE characters AS c SET
    name = CASE WHEN 'name' = ANY($3::text[]) THEN $4 ELSE name END,
    description = CASE WHEN 'description' = ANY($3::text[]) THEN $5 ELSE description END,
    appearance_tags = CASE WHEN 'appearance_tags' = ANY($3::text[]) THEN $6::text[] ELSE appearance_tags END,
    traits = CASE WHEN 'traits' = ANY($3::text[]) THEN $7 ELSE traits END,
    persona = CASE WHEN 'persona' = ANY($3::text[]) THEN $8 ELSE persona END,
    gender = CASE WHEN 'gender' = ANY($3::text[]) THEN $9 ELSE gender END,
    content_rating = CASE WHEN 'content_rating' = ANY($3::text[]) THEN $10 ELSE content_rating END,
    scene_behavior_rules = CASE WHEN 'scene_behavior_rules' = ANY($3::text[]) THEN $11::jsonb
                                ELSE scene_behavior_rules END,
    image_url = CASE WHEN 'image_url' = ANY($3::text[]) THEN $12 ELSE image_url END,
    reference_image_url = CASE WHEN 'reference_image_url' = ANY($3::text[]) THEN $13 ELSE reference_image_url END
WHERE c.id = $1 AND c.user_id = $2
RETURNING {COLUMNS}
"""


@translate_errors
async def update(
    connection: Connection, *, user_id: UUID, character_id: UUID, changes: CharacterFields
) -> Character | None:
    """Set the given columns of one of the user's characters; None when it is not theirs or not there."""
    unknown = set(changes) - set(WRITABLE_COLUMNS)
    if unknown:
        raise ValueError(f"not writable: {sorted(unknown)}")
    row = await connection.fetchrow(
        UPDATE,
        character_id,
        user_id,
        [*changes],
        *(changes.get(column) for column in WRITABLE_COLUMNS),
    )
    return None if row is None else _character(row)


DELETE = "DELETE FROM characters WHERE id = $1 AND user_id = $2 RETURNING id"


@translate_errors
async def delete(connection: Connection, *, user_id: UUID, character_id: UUID) -> bool:
    """Delete one of the user's characters; False when it is not theirs or not there."""
    return await connection.fetchval(DELETE, character_id, user_id) is not None


SET_PORTRAIT = """
UPDATE characters SET image_url = $3, reference_image_url = $3, seed_locked = coalesce($4, seed_locked)
WHERE id = $1 AND user_id = $2
RETURNING id
"""


@translate_errors
async def set_portrait(
    connection: Connection, *, user_id: UUID, character_id: UUID, image_url: str, seed_locked: int | None
) -> bool:
    """Point image and reference at a new portrait and lock its seed (seed, phase 2).

    False when the character is gone.
    """
    return await connection.fetchval(SET_PORTRAIT, character_id, user_id, image_url, seed_locked) is not None


SET_REFERENCE = f"""
UPDATE characters AS c SET reference_image_url = $3, seed_locked = $4
WHERE c.id = $1 AND c.user_id = $2
RETURNING {COLUMNS}
"""


@translate_errors
async def set_reference(
    connection: Connection, *, user_id: UUID, character_id: UUID, image_key: str, seed_locked: int | None
) -> Character | None:
    """Make ``image_key`` (one of our objects, "bucket/path") the reference and lock its seed; None when not theirs.

    The seed is the reference image's own (None for an image without one): a seed locked for the old
    reference would not reproduce the new one.
    """
    row = await connection.fetchrow(SET_REFERENCE, character_id, user_id, image_key, seed_locked)
    return None if row is None else _character(row)


# Only a reference still naming the old image moves: a user who chose another
# image meanwhile keeps it.
REPLACE_PORTRAIT = """
UPDATE characters SET
    image_url = CASE WHEN image_url = $3 THEN $4 ELSE image_url END,
    reference_image_url = CASE WHEN reference_image_url = $3 THEN $4 ELSE reference_image_url END
WHERE id = $1 AND user_id = $2 AND (image_url = $3 OR reference_image_url = $3)
RETURNING id
"""


@translate_errors
async def replace_portrait(
    connection: Connection, *, user_id: UUID, character_id: UUID, old_url: str, new_url: str
) -> bool:
    """Move the character from ``old_url`` to ``new_url`` (seed, phase 3); False when it no longer shows ``old_url``."""
    return await connection.fetchval(REPLACE_PORTRAIT, character_id, user_id, old_url, new_url) is not None


CLEAR_IMAGE = """
UPDATE characters SET
    image_url = CASE WHEN image_url = $2 THEN NULL ELSE image_url END,
    reference_image_url = CASE WHEN reference_image_url = $2 THEN NULL ELSE reference_image_url END
WHERE user_id = $1 AND (image_url = $2 OR reference_image_url = $2)
"""


@translate_errors
async def clear_image(connection: Connection, *, user_id: UUID, image_url: str) -> None:
    """Forget an image being deleted, in every character of the user showing it (they fall back to null)."""
    await connection.execute(CLEAR_IMAGE, user_id, image_url)
