"""The lean data path of lists (issue 17): only the selected columns, cursors and catalogue probe, same answers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField

from graph.selections import summarise
from resolvers.pagination import decode_cursor, make_page
from server.settings import Settings
from storage import characters
from storage.characters import partial_list_statement
from storage.database import acquire
from storage.enums import CharacterOrder, ContentRating
from tests.conftest import GraphQL, graphql_logging_statements


async def insert(pool: asyncpg.Pool, owner: uuid.UUID, name: str, description: str = "d") -> None:
    await pool.execute(
        "INSERT INTO characters (user_id, name, description, appearance_tags, image_url) "
        "VALUES ($1, $2, $3, ARRAY['tag'], 'https://cdn.example.com/a.png')",
        owner, name, description,
    )


def data(body: dict[str, Any]) -> Any:
    assert "errors" not in body, body
    return body["data"]


def select_list(statement: str) -> str:
    """The statement's select list (what it fetches), without its WHERE and ORDER BY."""
    return statement.split(" FROM characters c", 1)[0]


async def test_a_page_fetches_only_what_is_selected(settings: Settings, pool: asyncpg.Pool, alice: uuid.UUID) -> None:
    # given
    await insert(pool, alice, "a")
    async with graphql_logging_statements(settings) as (graphql, statements):
        # when: a plain page, then one with a signed URL
        statements.clear()
        plain = data(await graphql("{ characters(first: 5) { edges { node { id name } } } }", user=alice))
        plain_statements = list(statements)
        statements.clear()
        signed = data(
            await graphql("{ characters(first: 5) { edges { node { name signedImageUrl { url } } } } }", user=alice)
        )
        signed_statements = list(statements)
    # then: the plain page fetches neither the other columns nor the catalogue
    assert plain["characters"]["edges"][0]["node"]["name"] == "a"
    (statement,) = plain_statements
    fetched = select_list(statement)
    assert fetched.split() == ["SELECT", "c.id,", "c.name"]  # no owner, no time: no cursor, nothing signed
    # and the signed page probes the catalogue for its image only, with the owner signing checks, in the same single
    # statement
    assert signed["characters"]["edges"][0]["node"]["signedImageUrl"] == {"url": "https://cdn.example.com/a.png"}
    (statement,) = signed_statements
    fetched = select_list(statement)
    assert "stored_objects" in fetched
    assert "c.image_url" in fetched and "c.user_id" in fetched
    assert "c.description" not in fetched and "c.created_at" not in fetched


FRAGMENTS = """
query($withDescription: Boolean!, $skipTags: Boolean!) {
  characters(first: 10, orderBy: CREATED_AT_ASC) {
    edges { ...EdgeParts  node { label: name tags: appearanceTags @skip(if: $skipTags) } }
    pageInfo { ... on PageInfo { hasNextPage } }
  }
}
fragment EdgeParts on CharacterEdge {
  node { ...NodeParts  ... @include(if: $withDescription) { description } contentRating @skip(if: true) }
}
fragment NodeParts on Character { rating: contentRating }
"""


async def test_fragments_aliases_and_directives_with_variables_give_the_selected_fields(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given
    await insert(pool, alice, "first", "one")
    await insert(pool, alice, "second", "two")
    # when: the same document with each value of its variables, twice over (a memo must not keep one answer)
    answers = {}
    for _ in range(2):
        for with_description in (True, False):
            for skip_tags in (True, False):
                variables = {"withDescription": with_description, "skipTags": skip_tags}
                answers[with_description, skip_tags] = data(await graphql(FRAGMENTS, variables, user=alice))
    # then
    for (with_description, skip_tags), answer in answers.items():
        expected_nodes = []
        for name, description in (("first", "one"), ("second", "two")):
            node: dict[str, Any] = {"rating": "SFW"}
            if with_description:
                node["description"] = description
            node["label"] = name
            if not skip_tags:
                node["tags"] = ["tag"]
            expected_nodes.append(node)
        assert answer == {
            "characters": {"edges": [{"node": node} for node in expected_nodes], "pageInfo": {"hasNextPage": False}}
        }, (with_description, skip_tags)


async def test_cursors_are_made_when_any_is_selected(graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID) -> None:
    # given
    for name in ("a", "b", "c"):
        await insert(pool, alice, name)
    # when: the end cursor alone, then an edge's cursor through a fragment
    first = data(await graphql("{ characters(first: 1) { pageInfo { endCursor hasNextPage } } }", user=alice))
    end_cursor = first["characters"]["pageInfo"]["endCursor"]
    second = data(
        await graphql(
            "query($after: String) { characters(first: 1, after: $after) { ...C } } "
            "fragment C on CharacterConnection { edges { cursor node { name } } pageInfo { startCursor } }",
            {"after": end_cursor},
            user=alice,
        )
    )
    # then: both are cursors of the list, and the second page follows the first
    assert first["characters"]["pageInfo"]["hasNextPage"] is True
    assert decode_cursor(end_cursor) is not None
    (edge,) = second["characters"]["edges"]
    assert edge["node"]["name"] == "b"
    assert edge["cursor"] == second["characters"]["pageInfo"]["startCursor"]
    assert decode_cursor(edge["cursor"]) is not None


async def test_cursors_of_every_order_come_from_its_own_time(
    settings: Settings, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given three characters, the oldest changed last
    for name in ("a", "b", "c"):
        await insert(pool, alice, name)
    await pool.execute("UPDATE characters SET description = 'changed' WHERE user_id = $1 AND name = 'a'", alice)
    page = "query($after: String) { characters(first: 1, after: $after, orderBy: UPDATED_AT_DESC) { " \
        "edges { cursor node { name } } } }"
    async with graphql_logging_statements(settings) as (graphql, statements):
        # when the list is walked by its update time, a page at a time, by the edges' cursors
        names, after = [], None
        for _ in range(3):
            statements.clear()
            (edge,) = data(await graphql(page, {"after": after}, user=alice))["characters"]["edges"]
            names.append(edge["node"]["name"])
            after = edge["cursor"]
        (statement,) = [statement for statement in statements if " FROM characters c" in statement]

    # then each page followed the one before in that order, fetching the update time (not the creation time)
    assert names == ["a", "c", "b"]
    assert select_list(statement).split() == ["SELECT", "c.id,", "c.name,", "c.updated_at"]


def test_a_page_without_cursors_encodes_none() -> None:
    # given
    now = datetime.now(UTC)
    keys = [(now, uuid.uuid4()) for _ in range(3)]
    # when
    lean = make_page(keys, size=2, after=None, sort_key=lambda key: key, with_cursors=False)
    full = make_page(keys, size=2, after=None, sort_key=lambda key: key)
    # then
    assert lean.cursors is None
    assert lean.items == full.items and lean.has_next_page and full.has_next_page
    assert full.cursors is not None and len(full.cursors) == 2


def field(name: str, *selections: Any, directives: dict[str, dict[str, Any]] | None = None) -> SelectedField:
    return SelectedField(name=name, directives=directives or {}, arguments={}, selections=list(selections))


@pytest.mark.parametrize(
    ("page_info", "edge", "needs_cursors"),
    [
        ([field("hasNextPage"), field("hasPreviousPage")], [field("node", field("id"))], False),
        ([field("endCursor")], [field("node", field("id"))], True),
        ([field("startCursor")], [], True),
        ([], [field("cursor")], True),
        ([], [field("cursor", directives={"skip": {"if": True}})], False),
    ],
)
def test_the_summary_says_when_a_cursor_is_needed(
    page_info: list[SelectedField], edge: list[SelectedField], needs_cursors: bool
) -> None:
    # when
    summary, _ = summarise([field("characters", field("edges", *edge), field("pageInfo", *page_info))])
    # then
    assert summary.needs_cursors is needs_cursors


def test_the_summary_flattens_fragments_and_says_when_a_directive_decided() -> None:
    # given: node fields in a named and an inline fragment, one left out by @include, one by @skip
    node = field(
        "node",
        field("name"),
        FragmentSpread(name="F", type_condition="Character", directives={}, selections=[field("description")]),
        InlineFragment(type_condition=None, directives={"include": {"if": False}}, selections=[field("persona")]),
        field("traits", directives={"skip": {"if": True}}),
        field("__typename"),
    )
    # when
    summary, conditional = summarise([field("characters", field("edges", node), field("totalCount"))])
    plain, plain_conditional = summarise([field("characters", field("edges", field("node", field("id"))))])
    # then
    assert summary.node_fields == {"name", "description"}
    assert summary.total_count and not summary.needs_cursors
    assert conditional
    assert plain.node_fields == {"id"} and not plain_conditional


async def test_a_partial_row_holds_only_what_was_fetched(pool: asyncpg.Pool, alice: uuid.UUID) -> None:
    # given
    await insert(pool, alice, "a")
    # when
    async with acquire(pool) as connection:
        (row,) = await characters.list_page(connection, user_id=alice, limit=5, columns=frozenset({"name"}))
        (full,) = await characters.list_page(connection, user_id=alice, limit=5)
    # then: the id and the selected column; reading another (the owner, the order's time) fails loudly
    assert (row.id, row.name) == (full.id, "a")
    for unfetched in ("description", "user_id", "created_at"):
        with pytest.raises(AttributeError):
            getattr(row, unfetched)
    assert full.content_rating is ContentRating.SFW and full.appearance_tags == ("tag",)


async def test_a_partial_row_holds_its_columns_as_a_full_row_does(pool: asyncpg.Pool, alice: uuid.UUID) -> None:
    # given a character with tags, a rating and an image
    await insert(pool, alice, "a")
    every_column_but_one = characters.ALL_COLUMNS - {"description"}
    # when a page of every column but one is read, beside a full one
    async with acquire(pool) as connection:
        (row,) = await characters.list_page(connection, user_id=alice, limit=5, columns=every_column_but_one)
        (full,) = await characters.list_page(connection, user_id=alice, limit=5)
    # then each column the partial row holds is the full row's, converted the same way (tuple, enum, frozenset)
    assert {name: getattr(row, name) for name in every_column_but_one} == {
        name: getattr(full, name) for name in every_column_but_one
    }
    assert type(row.appearance_tags) is tuple and row.content_rating is ContentRating.SFW
    assert type(row.stored_image_keys) is frozenset
    with pytest.raises(AttributeError):
        _ = row.description


def test_a_partial_statement_takes_only_known_columns() -> None:
    with pytest.raises(ValueError, match="not a character column"):
        partial_list_statement(CharacterOrder.CREATED_AT_DESC, False, False, frozenset({"name; DROP TABLE x"}))
    statement = partial_list_statement(CharacterOrder.UPDATED_AT_ASC, True, True, frozenset({"name"}))
    assert select_list(statement).split() == ["SELECT", "c.id,", "c.name"]


async def character_id(pool: asyncpg.Pool, owner: uuid.UUID, name: str) -> str:
    found = await pool.fetchval("SELECT id FROM characters WHERE user_id = $1 AND name = $2", owner, name)
    return str(found)


async def test_a_character_by_id_fetches_only_what_is_selected(
    settings: Settings, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given
    await insert(pool, alice, "a", "the description")
    wanted = await character_id(pool, alice, "a")
    async with graphql_logging_statements(settings) as (graphql, statements):
        data(await graphql("query($id: ID!) { character(id: $id) { id } }", {"id": wanted}, user=alice))
        # (asyncpg has looked up uuid[] now, once per connection)
        # when: the character by id with two fields, then with its signed URL, then with two selections at once
        statements.clear()
        plain = data(await graphql("query($id: ID!) { character(id: $id) { id name } }", {"id": wanted}, user=alice))
        plain_statements = list(statements)
        statements.clear()
        signed = data(await graphql(
            "query($id: ID!) { character(id: $id) { name signedImageUrl { url } } }", {"id": wanted}, user=alice
        ))
        signed_statements = list(statements)
        statements.clear()
        both = data(await graphql(
            "query($id: ID!) { a: character(id: $id) { name } b: character(id: $id) { description } }",
            {"id": wanted}, user=alice,
        ))
        both_statements = list(statements)

    # then: the plain one fetches the id and name only, in one statement
    assert plain["character"] == {"id": wanted, "name": "a"}
    (statement,) = plain_statements
    fetched = select_list(statement)
    assert fetched.split() == ["SELECT", "c.id,", "c.name"]
    for column in ("c.description", "c.scene_behavior_rules", "c.appearance_tags", "c.image_url", "stored_objects"):
        assert column not in fetched, column
    # and the signed one probes the catalogue for its image
    assert signed["character"] == {"name": "a", "signedImageUrl": {"url": "https://cdn.example.com/a.png"}}
    (statement,) = signed_statements
    assert "stored_objects" in select_list(statement)
    assert "c.description" not in select_list(statement)
    # and two selections of one character are each answered from a row holding what they read
    assert both == {"a": {"name": "a"}, "b": {"description": "the description"}}
    assert len([statement for statement in both_statements if " FROM characters c " in statement]) == 2


BY_ID_WITH_DIRECTIVES = """
query($id: ID!, $withDescription: Boolean!) {
  character(id: $id) { ...Named  ... @include(if: $withDescription) { description } }
}
fragment Named on Character { label: name tags: appearanceTags }
"""


async def test_a_character_by_id_reads_fragments_aliases_and_directives(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    # given
    await insert(pool, alice, "a", "the description")
    wanted = await character_id(pool, alice, "a")

    # when: the same document asks without the description, then with it, then without again, and as a stranger
    variables: list[dict[str, Any]] = [{"id": wanted, "withDescription": value} for value in (False, True, False)]
    answers = [data(await graphql(BY_ID_WITH_DIRECTIVES, variables, user=alice)) for variables in variables]
    stranger = await graphql(BY_ID_WITH_DIRECTIVES, variables[1], user=bob)

    # then: each answer holds what its variables selected, and another user's character is NOT_FOUND as before
    full = {"label": "a", "tags": ["tag"], "description": "the description"}
    named = {"label": "a", "tags": ["tag"]}
    assert answers == [{"character": named}, {"character": full}, {"character": named}]
    assert stranger["data"] == {"character": None}
    assert stranger["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_a_partial_row_by_id_holds_only_what_was_fetched(pool: asyncpg.Pool, alice: uuid.UUID) -> None:
    # given
    await insert(pool, alice, "a")
    wanted = uuid.UUID(await character_id(pool, alice, "a"))

    # when: storage reads it by id for its name only, and whole
    async with acquire(pool) as connection:
        (partial,) = await characters.get_many(
            connection, user_id=alice, character_ids=[wanted], columns=frozenset({"name"})
        )
        (whole,) = await characters.get_many(connection, user_id=alice, character_ids=[wanted])

    # then: the partial row holds its id and name as the whole one does, and nothing else
    assert (partial.id, partial.name) == (whole.id, whole.name)
    for unfetched in ("description", "user_id"):
        with pytest.raises(AttributeError):
            getattr(partial, unfetched)
    with pytest.raises(ValueError, match="not a character column"):
        characters.partial_get_many_statement(frozenset({"name; DROP TABLE characters"}))
