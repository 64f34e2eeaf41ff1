"""characters(search:, contentRating:, orderBy:): a name search through a trigram index, and keyset pages in any
of four orders whose cursors cannot be mixed up."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from resolvers.characters import SEARCH_MAX
from resolvers.errors import BadUserInput
from resolvers.pagination import MAX_CURSOR_LENGTH, decode_cursor, encode_cursor
from storage.characters import LIST, CharacterFilter
from storage.enums import CharacterOrder
from tests.conftest import GraphQL
from tests.support import only_error

SEARCH = """
query($search: String, $rating: ContentRating, $first: Int) {
  characters(search: $search, contentRating: $rating, first: $first) { totalCount edges { node { name } } }
}
"""
PAGE = """
query($order: CharacterOrder!, $first: Int, $after: String) {
  characters(orderBy: $order, first: $first, after: $after) {
    edges { cursor node { name } } pageInfo { hasNextPage endCursor }
  }
}
"""


async def insert(pool: asyncpg.Pool, user: uuid.UUID, names: list[str], *, rating: str = "sfw") -> None:
    """Characters named ``names``; the i-th created i minutes ago and updated 100 - i seconds ago, so creation and
    update orders are each other's reverse, and an update now makes a character the latest updated."""
    await pool.execute(
        """
        INSERT INTO characters (user_id, name, description, content_rating, created_at, updated_at)
        SELECT $1, name, 'd', $3, now() - make_interval(mins => n::int), now() - make_interval(secs => 100 - n::int)
        FROM unnest($2::text[]) WITH ORDINALITY AS t(name, n)
        """,
        user, names, rating,
    )


def names(body: dict[str, Any]) -> list[str]:
    return [edge["node"]["name"] for edge in body["data"]["characters"]["edges"]]


async def test_search_matches_part_of_a_name_ignoring_case(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    """Given alice's Aria, Maria and Bob, and bob's Arianne, when alice searches "ARI", then she gets her two
    names containing it, newest first, and totalCount counts them."""
    await insert(pool, alice, ["Aria", "Maria", "Bob"])
    await insert(pool, bob, ["Arianne"])

    body = await graphql(SEARCH, {"search": "  ARI "}, user=alice)

    assert names(body) == ["Aria", "Maria"]
    assert body["data"]["characters"]["totalCount"] == 2


@pytest.mark.parametrize(
    ("search", "found"),
    [
        ("100%", ["100% Real"]), ("%", ["100% Real"]), ("_", ["snake_case"]), ("e_c", ["snake_case"]),
        ("\\", ["back\\slash"]),
    ],
)
async def test_percent_underscore_and_backslash_match_only_themselves(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID, search: str, found: list[str]
) -> None:
    """Given names where LIKE's wildcards would match more, when each is searched, then it matches literally."""
    await insert(pool, alice, ["100% Real", "100 Real", "snake_case", "snakeXcase", "back\\slash", "backslash"])

    body = await graphql(SEARCH, {"search": search}, user=alice)

    assert names(body) == found


async def test_blank_search_lists_everything_and_rating_filters(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    """Given two SFW and one NSFW character, when alice searches blank, and filters by rating with and without a
    search, then blank lists all three, and the rating keeps its own (totalCount agreeing)."""
    await insert(pool, alice, ["Aria", "Maria"])
    await insert(pool, alice, ["Arianne"], rating="nsfw")

    blank = await graphql(SEARCH, {"search": "   "}, user=alice)
    nsfw = await graphql(SEARCH, {"rating": "NSFW"}, user=alice)
    sfw_search = await graphql(SEARCH, {"rating": "SFW", "search": "aria", "first": 1}, user=alice)

    assert sorted(names(blank)) == ["Aria", "Arianne", "Maria"]
    assert names(nsfw) == ["Arianne"]
    assert nsfw["data"]["characters"]["totalCount"] == 1
    assert names(sfw_search) == ["Aria"]
    assert sfw_search["data"]["characters"]["totalCount"] == 2


async def test_a_search_over_the_bound_is_bad_user_input(graphql: GraphQL, alice: uuid.UUID) -> None:
    """Given a search one character over SEARCH_MAX, when sent, then it is refused naming the argument."""
    body = await graphql(SEARCH, {"search": "a" * (SEARCH_MAX + 1)}, user=alice)

    assert only_error(body)["extensions"] == {"code": "BAD_USER_INPUT", "field": "search"}
    assert body["data"] == {"characters": None}


EXPECTED_ORDERS = {
    # insert() makes C1 the newest created and the latest updated.
    "CREATED_AT_DESC": ["C1", "C2", "C3", "C4", "C5"],
    "CREATED_AT_ASC": ["C5", "C4", "C3", "C2", "C1"],
    "UPDATED_AT_DESC": ["C5", "C4", "C3", "C2", "C1"],
    "UPDATED_AT_ASC": ["C1", "C2", "C3", "C4", "C5"],
}


@pytest.mark.parametrize(("order", "expected"), EXPECTED_ORDERS.items(), ids=EXPECTED_ORDERS.keys())
async def test_pages_walk_every_character_once_in_each_order(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID, order: str, expected: list[str]
) -> None:
    """Given five characters whose creation and update orders differ, when alice walks them two at a time in
    ``order``, then she sees each once, in that order."""
    await insert(pool, alice, ["C1", "C2", "C3", "C4", "C5"])

    seen: list[str] = []
    after = None
    for _ in range(5):
        body = await graphql(PAGE, {"order": order, "first": 2, "after": after}, user=alice)
        connection = body["data"]["characters"]
        seen += [edge["node"]["name"] for edge in connection["edges"]]
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]

    assert seen == expected


async def test_an_update_during_the_walk_neither_repeats_nor_skips_the_others(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    """Given a walk by UPDATED_AT_ASC two pages in, when a character already seen is updated (moving it to the
    end), then the rest of the walk still shows every other character once."""
    await insert(pool, alice, ["C1", "C2", "C3", "C4", "C5"])
    first = (await graphql(PAGE, {"order": "UPDATED_AT_ASC", "first": 2}, user=alice))["data"]["characters"]
    await pool.execute("UPDATE characters SET traits = 'changed' WHERE name = 'C1'")

    rest = await graphql(PAGE, {"order": "UPDATED_AT_ASC", "after": first["pageInfo"]["endCursor"]}, user=alice)

    assert [edge["node"]["name"] for edge in first["edges"]] == ["C1", "C2"]
    assert names(rest) == ["C3", "C4", "C5", "C1"]


@pytest.mark.parametrize(
    ("made_by", "used_with"),
    [
        ("CREATED_AT_DESC", "UPDATED_AT_DESC"), ("UPDATED_AT_ASC", "CREATED_AT_DESC"),
        ("CREATED_AT_ASC", "UPDATED_AT_ASC"),
    ],
)
async def test_a_cursor_from_another_order_is_bad_user_input(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID, made_by: str, used_with: str
) -> None:
    """Given a cursor from a page in one order, when it is used with another, then BAD_USER_INPUT says so."""
    await insert(pool, alice, ["C1", "C2", "C3"])
    cursor = (await graphql(PAGE, {"order": made_by, "first": 1}, user=alice))["data"]["characters"]["pageInfo"]

    body = await graphql(PAGE, {"order": used_with, "after": cursor["endCursor"]}, user=alice)

    error = only_error(body)
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "after"}
    assert "another order" in error["message"]


async def test_the_name_search_uses_the_trigram_index(pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID) -> None:
    """Given 20,000 characters of alice's and 2,000 of bob's, analysed, when the planner is shown the statement a
    search of alice's runs (with its values) and told to avoid reading the whole table, then it reads the trigram
    index, not her rows through the owner index. (At 22,000 rows it would rather read the table: 5 ms against the
    index's 1 ms; from about 200,000 it picks the index by itself.)"""
    await pool.execute(
        """
        INSERT INTO characters (user_id, name, description)
        SELECT CASE WHEN n % 11 = 0 THEN $2::uuid ELSE $1::uuid END, md5(n::text), 'd'
        FROM generate_series(1, 22000) AS n
        """,
        alice, bob,
    )
    await pool.execute("ANALYZE characters")
    search = CharacterFilter(name_contains="ab_d")

    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SET LOCAL enable_seqscan = off")
        plan = await connection.fetch(
            "EXPLAIN " + LIST[CharacterOrder.CREATED_AT_DESC, True, False], alice, 21, None, search.name_pattern
        )

    text = "\n".join(row[0] for row in plan)
    assert "Bitmap Index Scan on characters_name_trgm_idx" in text, text
    assert "characters_user_newest_idx" not in text, text


def test_the_longest_cursor_fits_the_bound_and_reads_back_only_in_its_order() -> None:
    """Given a key with microseconds under the longest order tag, when encoded, then it is within
    MAX_CURSOR_LENGTH (the Edge.cursor description's 128), reads back in its order and is refused in another."""
    key = (datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC), uuid.uuid4())
    longest = max((order.name for order in CharacterOrder), key=len)

    cursor = encode_cursor(key, longest)

    assert len(cursor) <= MAX_CURSOR_LENGTH <= 128
    assert decode_cursor(cursor, longest) == key
    with pytest.raises(BadUserInput):
        decode_cursor(cursor)
