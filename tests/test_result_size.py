"""A response's size is estimated before validation, every list counted by the items it may hold."""

from __future__ import annotations

import uuid

import pytest
from graphql import (
    GraphQLInterfaceType,
    GraphQLNonNull,
    GraphQLObjectType,
    get_introspection_query,
    is_list_type,
    parse,
)

from graph.document_cost import CAP
from graph.result_size import estimate_results
from graph.schema import JSON_WEIGHT, MAX_INTROSPECTION, MAX_RESULTS, _result_types, schema
from resolvers.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from tests.conftest import GraphQL
from tests.support import only_error

EVERY_FIELD = (
    "id name description appearanceTags traits persona gender contentRating sceneBehaviorRules imageUrl "
    "referenceImageUrl seedLocked createdAt updatedAt signedImageUrl { url expiresAt }"
)


def estimate(query: str, introspection: bool = False) -> int:
    types, bounds = _result_types(schema)
    return estimate_results(parse(query), types, bounds, introspection)


CONNECTION_FRAGMENT = f"fragment Page on CharacterConnection {{ edges {{ cursor node {{ {EVERY_FIELD} }} }} }}"


def connection_fragment_pages(pages: int, first: int) -> str:
    """Aliased pages whose edges are in a fragment on the connection, as Relay and Apollo write them."""
    aliased = " ".join(f"p{i}: characters(first: {first}) {{ ...Page }}" for i in range(pages))
    return f"{{ {aliased} }} {CONNECTION_FRAGMENT}"


def introspection_walk(aliases: int) -> str:
    """Every type's fields, ``aliases`` times, each with its type's type's fields: 0.8 KB at 29 aliases."""
    field = (
        "name args { name type { name ofType { name } } } "
        "type { name ofType { name ofType { fields { name args { name } type { name } } } } }"
    )
    selections = " ".join(f"f{i}: fields {{ ...F }}" for i in range(aliases))
    return f"{{ __schema {{ types {{ name {selections} }} }} }} fragment F on __Field {{ {field} }}"


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
        # introspection counts 1 a field among data (it has its own measure)
        ("{ __schema { types { name } } }", 1),
    ],
)
def test_lists_count_the_items_they_may_hold(query: str, expected: int) -> None:
    assert estimate(query) == expected


def test_introspection_counts_what_it_selects_by_the_schemas_totals() -> None:
    # given the schema's types and their fields
    types, _ = _result_types(schema)
    type_count = len(types.type_map)
    objects = [t for t in types.type_map.values() if isinstance(t, GraphQLObjectType | GraphQLInterfaceType)]
    field_count = sum(len(t.fields) for t in objects)
    # when introspection walks every type and every type's fields, then the estimate is the walk's exact sum:
    # __schema 1 + each type (1 + name 1) + each field (1 + name 1)
    assert estimate("{ __schema { types { name fields { name } } } }", introspection=True) == (
        1 + 2 * type_count + 2 * field_count
    )
    # and a field's type reached below it counts its lists by the largest, not the average
    largest = max(len(t.fields) for t in objects)
    assert estimate('{ __type(name: "Query") { fields { name } } }', introspection=True) == 1 + largest * 2
    # and data counts none of it
    assert estimate("{ __schema { types { name fields { name } } } }") == 1


async def test_introspection_has_its_own_limit_graphiqls_query_fits_and_a_walk_of_types_is_refused(
    graphql: GraphQL,
) -> None:
    # given GraphiQL's introspection query with every option graphql-core offers, then it fits with room
    everything = get_introspection_query(True, True, True, True, True)
    assert estimate(everything, introspection=True) <= MAX_INTROSPECTION * 0.85
    assert estimate(introspections(2), introspection=True) > MAX_INTROSPECTION
    # when a 0.8 KB document walks every type's fields 29 times, each field's type's type's fields
    # (240 ms of CPU and 750 KB of answer when __schema counted 4,000 whatever it selected)
    query = introspection_walk(29)
    error = only_error(await graphql(query))
    # then it is refused before validation, naming its introspection estimate
    assert error["extensions"] == {
        "code": "GRAPHQL_VALIDATION_FAILED", "measure": "introspection", "limit": MAX_INTROSPECTION,
        "value": estimate(query, introspection=True),
    }
    assert estimate(query, introspection=True) > 50 * MAX_INTROSPECTION


def test_a_fragment_under_a_page_counts_as_the_same_fields_written_inline() -> None:
    # given pages of 5 and of 100 whose edges are in a fragment on the connection, and the same written inline
    for first in (5, 100):
        written_inline = f"{{ characters(first: {first}) {{ edges {{ cursor node {{ {EVERY_FIELD} }} }} }} }}"
        # when estimated, then both count the page's first, not the largest page
        assert estimate(connection_fragment_pages(1, first)) == estimate(written_inline)
    # and one fragment spread under both pages counts each by its own
    both = f"{{ a: characters(first: 5) {{ ...Page }} b: characters(first: 100) {{ ...Page }} }} {CONNECTION_FRAGMENT}"
    assert estimate(both) == estimate(connection_fragment_pages(1, 5)) + estimate(connection_fragment_pages(1, 100))


async def test_three_small_pages_through_a_connection_fragment_run(graphql: GraphQL, alice: uuid.UUID) -> None:
    # given three pages of 5 spreading a connection fragment (refused at 13,803 when the fragment counted 100 rows)
    query = connection_fragment_pages(3, 5)
    # when it is sent, then it runs
    body = await graphql(query, user=alice)
    assert "errors" not in body, body
    assert set(body["data"]) == {"p0", "p1", "p2"}


async def test_a_fragment_cycle_under_a_page_is_left_to_validation(graphql: GraphQL) -> None:
    # given fragments that spread each other under a page
    query = (
        "{ characters(first: 5) { ...A } } "
        "fragment A on CharacterConnection { edges { cursor } ...B } "
        "fragment B on CharacterConnection { edges { cursor } ...A }"
    )
    # when it is estimated and sent, then the estimate ends and validation names the cycle
    assert estimate(query) < MAX_RESULTS
    body = await graphql(query)
    assert body.get("data") is None
    assert {error["extensions"]["code"] for error in body["errors"]} == {"GRAPHQL_VALIDATION_FAILED"}
    assert any("cycle" in error["message"] or "itself" in error["message"] for error in body["errors"])


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


async def test_full_pages_and_graphiqls_introspection_are_accepted(graphql: GraphQL, alice: uuid.UUID) -> None:
    # given what clients really send: a full page of characters, two without their JSON rules, GraphiQL's
    # introspection query
    without_rules = aliased_pages(2).replace(" sceneBehaviorRules", "")
    for query in (aliased_pages(1), without_rules, get_introspection_query(descriptions=True), introspections(1)):
        # then each runs
        assert estimate(query) <= MAX_RESULTS
        body = await graphql(query, user=alice)
        assert "errors" not in body, body


async def test_a_json_leaf_counts_as_many_values(graphql: GraphQL, alice: uuid.UUID) -> None:
    # given two full pages, whose 200 sceneBehaviorRules may each hold 16 KiB of JSON
    query = aliased_pages(2)
    # when estimated, then each rules leaf counts JSON_WEIGHT, and the document is refused
    assert estimate(query) - estimate(query.replace(" sceneBehaviorRules", "")) == 200 * JSON_WEIGHT
    error = only_error(await graphql(query, user=alice))
    assert (error["extensions"]["measure"], error["extensions"]["value"]) == ("results", estimate(query))


async def test_two_aliased_introspections_are_refused(graphql: GraphQL) -> None:
    error = only_error(await graphql(introspections(2)))
    assert (error["extensions"]["measure"], error["extensions"]["value"]) == (
        "introspection", 2 * estimate(introspections(1), introspection=True)
    )
