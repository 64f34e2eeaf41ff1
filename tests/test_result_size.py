"""A response's size is estimated before validation, every list counted by the items it may hold."""

from __future__ import annotations

import uuid

import pytest
from graphql import GraphQLNonNull, GraphQLObjectType, get_introspection_query, is_list_type, parse

from graph.document_cost import CAP
from graph.result_size import estimate_results
from graph.schema import MAX_RESULTS, SCHEMA_FIELD_WEIGHT, _result_types, schema
from resolvers.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from tests.conftest import GraphQL
from tests.support import only_error

EVERY_FIELD = (
    "id name description appearanceTags traits persona gender contentRating sceneBehaviorRules imageUrl "
    "referenceImageUrl seedLocked createdAt updatedAt signedImageUrl { url expiresAt }"
)


def estimate(query: str) -> int:
    types, bounds = _result_types(schema)
    return estimate_results(parse(query), types, bounds)


def aliased_pages(aliases: int) -> str:
    """Pages of 100 characters, their fields written once in a fragment (under the fields-written limit)."""
    page = "characters(first: 100) { edges { cursor node { ...Everything } } }"
    pages = " ".join(f"p{i}: {page}" for i in range(aliases))
    return f"{{ {pages} }} fragment Everything on Character {{ {EVERY_FIELD} }}"


def introspections(copies: int) -> str:
    query = get_introspection_query(descriptions=True)
    selection = query[query.index("__schema"):query.index("fragment FullType")].strip()
    selection = selection[:selection.rindex("}")].strip()
    aliased = " ".join(f"s{i}: {selection}" for i in range(copies))
    return f"query {{ {aliased} }}\n{query[query.index('fragment FullType'):]}"


def test_every_list_of_the_schema_is_a_page_or_has_a_bound() -> None:
    # given the schema's list fields, then each is a connection's edges (bounded by first) or has its own bound
    types, bounds = _result_types(schema)
    unbounded = []
    for type_ in types.type_map.values():
        if not isinstance(type_, GraphQLObjectType) or type_.name in ("__Schema",):
            continue
        for name, field in type_.fields.items():
            inner = field.type.of_type if isinstance(field.type, GraphQLNonNull) else field.type
            paged = type_.name.endswith("Connection") and name == "edges"
            if is_list_type(inner) and not paged and (type_.name, name) not in bounds.fixed:
                unbounded.append(f"{type_.name}.{name}")
    assert unbounded == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # a page: the connection (1) + 100 edges x (edge 1 + cursor 1 + node 1 + id 1)
        ("{ characters(first: 100) { edges { cursor node { id } } } }", 1 + 100 * 4),
        # no first: the default page; a variable: the largest page
        ("{ characters { edges { node { id } } } }", 1 + DEFAULT_PAGE_SIZE * 3),
        ("query($n: Int) { characters(first: $n) { edges { node { id } } } }", 1 + MAX_PAGE_SIZE * 3),
        # a list that is not a page counts its own bound: 30 tags under each of 100 characters
        ("{ characters(first: 100) { edges { node { appearanceTags } } } }", 1 + 100 * (1 + 1 + 30)),
        # introspection: __schema has a fixed weight, whatever it selects
        ("{ __schema { types { name } } }", SCHEMA_FIELD_WEIGHT),
    ],
)
def test_lists_count_the_items_they_may_hold(query: str, expected: int) -> None:
    assert estimate(query) == expected


def test_fragments_are_measured_once_and_doubling_is_capped() -> None:
    # given 60 levels of fragments each spreading the next twice
    chain = "".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }} " for i in range(60))
    query = "{ ...F0 } " + chain + "fragment F60 on Query { imageModels { id } }"
    # when estimated, then the size is seen (capped), not walked
    assert estimate(query) == CAP


async def test_thirty_aliased_pages_are_refused_with_their_size(graphql: GraphQL, alice: uuid.UUID) -> None:
    # given a 2.3 KB document within the other limits: 30 aliased pages of 100 characters, 17 values each
    query = aliased_pages(30)
    # when it is sent, then it is refused before validation, naming the estimate
    error = only_error(await graphql(query, user=alice))
    assert error["extensions"] == {
        "code": "GRAPHQL_VALIDATION_FAILED", "measure": "results", "limit": MAX_RESULTS, "value": estimate(query),
    }
    assert estimate(query) > 100 * MAX_RESULTS // 10


async def test_two_full_pages_and_graphiqls_introspection_are_accepted(graphql: GraphQL, alice: uuid.UUID) -> None:
    # given what clients really send: two full pages of characters, GraphiQL's introspection query, twice aliased
    for query in (aliased_pages(2), get_introspection_query(descriptions=True), introspections(2)):
        # then each runs
        assert estimate(query) <= MAX_RESULTS
        body = await graphql(query, user=alice)
        assert "errors" not in body, body


async def test_three_aliased_introspections_are_refused(graphql: GraphQL) -> None:
    error = only_error(await graphql(introspections(3)))
    assert (error["extensions"]["measure"], error["extensions"]["value"]) == ("results", 3 * SCHEMA_FIELD_WEIGHT)
