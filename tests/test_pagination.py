"""Relay-style pagination of characters, newest first, across pages."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from resolvers.pagination import decode_cursor, encode_cursor
from tests.conftest import GraphQL
from tests.support import only_error
from tests.test_characters import create_character

PAGE = """
query($first: Int, $after: String) {
  characters(first: $first, after: $after) {
    edges { cursor node { id name } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""


async def insert_characters(pool: asyncpg.Pool, user: uuid.UUID, count: int) -> list[str]:
    """``count`` characters with distinct creation times; returns their ids newest first."""
    rows = await pool.fetch(
        """
        INSERT INTO characters (user_id, name, description, created_at)
        SELECT $1, 'C' || n, 'd', now() - make_interval(secs => n)
        FROM generate_series(1, $2) AS n
        RETURNING id, created_at
        """,
        user,
        count,
    )
    return [str(row["id"]) for row in sorted(rows, key=lambda row: row["created_at"], reverse=True)]


async def test_pages_walk_every_character_once_newest_first(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given 25 characters
    expected = await insert_characters(pool, alice, 25)

    # when alice walks the list 10 at a time
    seen: list[str] = []
    pages = []
    after = None
    while True:
        body = await graphql(PAGE, {"first": 10, "after": after}, user=alice)
        connection = body["data"]["characters"]
        pages.append(connection)
        seen += [edge["node"]["id"] for edge in connection["edges"]]
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]

    # then she sees them all, once, in order, in pages of 10, 10 and 5
    assert seen == expected
    assert [len(page["edges"]) for page in pages] == [10, 10, 5]
    assert [page["pageInfo"]["hasPreviousPage"] for page in pages] == [False, True, True]
    for page in pages:
        assert page["pageInfo"]["startCursor"] == page["edges"][0]["cursor"]
        assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]


async def test_ties_on_creation_time_are_ordered_by_id(graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID) -> None:
    # given 7 characters created in one transaction (the same now())
    await pool.execute(
        "INSERT INTO characters (user_id, name, description) SELECT $1, 'C' || n, 'd' FROM generate_series(1, 7) n",
        alice,
    )
    expected = [str(row["id"]) for row in await pool.fetch("SELECT id FROM characters ORDER BY id DESC")]

    seen = []
    after = None
    for _ in range(4):
        connection = (await graphql(PAGE, {"first": 2, "after": after}, user=alice))["data"]["characters"]
        seen += [edge["node"]["id"] for edge in connection["edges"]]
        after = connection["pageInfo"]["endCursor"]

    assert seen == expected


async def test_a_new_character_does_not_shift_the_next_page(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    expected = await insert_characters(pool, alice, 6)
    first = (await graphql(PAGE, {"first": 3}, user=alice))["data"]["characters"]

    await create_character(graphql, alice, name="Newcomer")
    second = (
        await graphql(PAGE, {"first": 3, "after": first["pageInfo"]["endCursor"]}, user=alice)
    )["data"]["characters"]

    assert [edge["node"]["id"] for edge in second["edges"]] == expected[3:]
    assert second["pageInfo"]["hasNextPage"] is False


@pytest.mark.parametrize(
    "document, variables",
    [
        (PAGE, None),  # the variables left out: the arguments are omitted (UNSET to the resolver, graph/arguments.py)
        (PAGE, {"first": None, "after": None}),  # null variables
        (PAGE.replace("query($first: Int, $after: String)", "query").replace(
            "first: $first, after: $after", "first: null, after: null, search: null, contentRating: null"
        ), None),  # null literals
    ],
    ids=["omitted", "null variables", "null literals"],
)
async def test_default_page_is_20(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID, document: str, variables: dict[str, object] | None
) -> None:
    await insert_characters(pool, alice, 21)

    connection = (await graphql(document, variables, user=alice))["data"]["characters"]

    assert len(connection["edges"]) == 20
    assert connection["pageInfo"]["hasNextPage"] is True


async def test_an_empty_list_has_no_cursors(graphql: GraphQL, alice: uuid.UUID) -> None:
    connection = (await graphql(PAGE, user=alice))["data"]["characters"]

    assert connection == {
        "edges": [],
        "pageInfo": {"hasNextPage": False, "hasPreviousPage": False, "startCursor": None, "endCursor": None},
    }


@pytest.mark.parametrize("first", [0, -1, 101])
async def test_first_out_of_bounds_is_bad_input(graphql: GraphQL, alice: uuid.UUID, first: int) -> None:
    body = await graphql(PAGE, {"first": first}, user=alice)

    assert only_error(body)["extensions"] == {"code": "BAD_USER_INPUT", "field": "first"}


@pytest.mark.parametrize("after", ["garbage", "", "!!!", "MjAyNi0xMS0yNVQwNzo0MDoxNw", "bm90fGF8dXVpZA"])
async def test_a_malformed_cursor_is_bad_input(graphql: GraphQL, alice: uuid.UUID, after: str) -> None:
    body = await graphql(PAGE, {"after": after}, user=alice)

    assert only_error(body)["extensions"] == {"code": "BAD_USER_INPUT", "field": "after"}


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


SOME_ID = "2f1d7c3e-8a4b-4c5d-9e6f-0a1b2c3d4e5f"
# Cursors a client could forge: times out of range or at an offset, ids in other spellings, bad base64.
FORGED_CURSORS = {
    "year 1 at +14:00 (year 0 in UTC)": _cursor(f"0001-01-01T00:00:00+14:00|{SOME_ID}"),
    "year 1 at +23:59": _cursor(f"0001-01-01T00:00:00+23:59|{SOME_ID}"),
    "year 9999 at -23:59 (year 10000 in UTC)": _cursor(f"9999-12-31T23:59:59-23:59|{SOME_ID}"),
    "a time at another offset": _cursor(f"2024-01-01T00:00:00+02:00|{SOME_ID}"),
    "year 0": _cursor(f"0000-01-01T00:00:00+00:00|{SOME_ID}"),
    "year 99999": _cursor(f"99999-01-01T00:00:00+00:00|{SOME_ID}"),
    "NaN": _cursor(f"NaN|{SOME_ID}"),
    "no time zone": _cursor(f"2024-01-01T00:00:00|{SOME_ID}"),
    "a 5000-digit id": _cursor("2024-01-01T00:00:00+00:00|" + "9" * 5000),
    "a non-UUID id": _cursor("2024-01-01T00:00:00+00:00|not-a-uuid"),
    "a UUID in braces": _cursor("2024-01-01T00:00:00+00:00|{" + SOME_ID + "}"),
    "a UUID without hyphens": _cursor("2024-01-01T00:00:00+00:00|" + SOME_ID.replace("-", "")),
    "a time without an id": _cursor("2024-01-01T00:00:00+00:00"),
    "three parts": _cursor(f"2024-01-01T00:00:00+00:00|{SOME_ID}|x"),
    "not UTF-8": base64.urlsafe_b64encode(b"\xff\xfe|\x00").decode(),
    "standard base64 alphabet": base64.b64encode(f"2024-01-01T00:00:00+00:00|{SOME_ID}?>".encode()).decode(),
    "bad padding": "AAAA=A",
    "one character": "A",
    "only padding": "==",
    "non-ASCII": "é" * 8,
    "a NUL": "\x00",
    "a megabyte": "A" * 1_000_000,
}
LISTS = {
    "characters": "characters(after: $after) { edges { cursor } }",
    "jobs": "jobs(after: $after) { edges { cursor } }",
    "workspaceAssets": "workspaceAssets(after: $after) { edges { cursor } }",
    "libraryAssets": "libraryAssets(after: $after) { edges { cursor } }",
}


@pytest.mark.parametrize("field", LISTS.values(), ids=LISTS.keys())
@pytest.mark.parametrize("after", FORGED_CURSORS.values(), ids=FORGED_CURSORS.keys())
async def test_a_forged_cursor_is_bad_input_on_every_list(
    graphql: GraphQL, alice: uuid.UUID, field: str, after: str
) -> None:
    # given a cursor this server never issued, when alice pages any list after it
    body = await graphql(f"query($after: String) {{ {field} }}", {"after": after}, user=alice)

    # then she is told it is not a cursor, not a 500 nor a masked internal error
    assert only_error(body)["extensions"] == {"code": "BAD_USER_INPUT", "field": "after"}


def test_a_cursor_is_read_back_with_or_without_base64_padding() -> None:
    # given the cursor of a row created on a whole second (62 bytes: base64 would pad it with one "=")
    key = (datetime(2024, 1, 1, tzinfo=UTC), uuid.UUID(SOME_ID))
    cursor = encode_cursor(key)

    # when it is read back as issued, and padded as some base64 libraries do, then it is the same key
    assert decode_cursor(cursor) == key
    assert decode_cursor(cursor + "=") == key
