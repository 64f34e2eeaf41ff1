"""A document's cost is measured before validation, each fragment once, and documents over the limits are refused."""

from __future__ import annotations

import uuid

import pytest
from graphql import parse

from graph.document_cost import CAP, measure
from graph.schema import (
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_DOCUMENT_CHARS,
    MAX_FIELDS,
    MAX_REPEATS,
    MAX_SELECTIONS,
    LimitedCachedDocuments,
)
from tests.conftest import GraphQL, token_for
from tests.realtime_support import PROTOCOLS, GraphQLSocket, error_codes_of, errors_of
from tests.support import only_error
from tests.test_limits_and_masking import INTROSPECTION


def doubling_fragments(levels: int, on: str = "Query", operation: str = "query") -> str:
    """``levels`` fragments each spreading the next twice: about 40 bytes a level, 2^levels fields expanded."""
    fragments = "".join(f"fragment F{i} on {on} {{ ...F{i + 1} ...F{i + 1} }} " for i in range(levels))
    return f"{operation} {{ ...F0 }} {fragments}fragment F{levels} on {on} {{ __typename }}"


def refusal(body: dict[str, object], measure_name: str) -> dict[str, object]:
    error = only_error(body)
    extensions = error["extensions"]
    assert extensions["code"] == "GRAPHQL_VALIDATION_FAILED", error
    assert extensions["measure"] == measure_name, error
    assert body.get("data") is None
    return dict(extensions)


@pytest.mark.parametrize("levels", [10, 20, 30, 40, 190])
async def test_doubling_fragments_are_refused_before_validation(graphql: GraphQL, levels: int) -> None:
    # given a document of fragments that each spread the next twice (a few hundred bytes to 8 KB, under the token limit)
    query = doubling_fragments(levels)

    # when it is sent, then it is refused at once with what it would have expanded to
    extensions = refusal(await graphql(query), "selections")

    assert extensions["limit"] == MAX_SELECTIONS
    assert extensions["value"] == min(2**levels, CAP)


async def test_doubling_fragments_under_the_limit_run(graphql: GraphQL) -> None:
    # given the largest doubling document the expanded-field limit accepts
    levels = MAX_SELECTIONS.bit_length() - 1
    assert 2**levels <= MAX_SELECTIONS < 2 ** (levels + 1)

    # when it is sent, then it runs
    body = await graphql(doubling_fragments(levels))

    assert body == {"data": {"__typename": "Query"}}


async def test_aliases_in_a_fragment_count_once_per_spread(graphql: GraphQL) -> None:
    # given a fragment of half the alias limit plus one, spread twice
    half = MAX_ALIASES // 2 + 1
    aliases = " ".join(f"a{i}: __typename" for i in range(half))
    query = (
        "{ ...A ...B } fragment A on Query { ...C } fragment B on Query { ...C } "
        f"fragment C on Query {{ {aliases} }}"
    )

    # when it is sent, then its aliases are counted with the fragments expanded
    extensions = refusal(await graphql(query), "aliases")

    assert extensions == {"code": "GRAPHQL_VALIDATION_FAILED", "measure": "aliases", "limit": MAX_ALIASES,
                          "value": 2 * half}


async def test_depth_counts_through_fragments(graphql: GraphQL, alice: uuid.UUID) -> None:
    # given a chain of fragments each adding one level of fields under characters
    levels = MAX_DEPTH + 2
    fragments = " ".join(f"fragment L{i} on Query {{ f{i} {{ ...L{i + 1} }} }}" for i in range(levels))
    query = "{ ...L0 } " + fragments + f" fragment L{levels} on Query {{ __typename }}"

    # when it is sent, then its depth is that of the expanded tree
    extensions = refusal(await graphql(query, user=alice), "depth")

    assert extensions["value"] == levels
    assert extensions["limit"] == MAX_DEPTH


async def test_too_many_fields_written_are_refused(graphql: GraphQL) -> None:
    # given more fields than the limit, written out (same-name fields make validation quadratic)
    query = "{ " + "__typename " * (MAX_FIELDS + 1) + "}"

    body = await graphql(query)

    assert body["data"] is None
    by_measure = {error["extensions"]["measure"]: error["extensions"] for error in body["errors"]}
    assert set(by_measure) == {"fields", "repeats"}  # 201 __typename are also 201 fields of one response name
    assert by_measure["fields"] == {"code": "GRAPHQL_VALIDATION_FAILED", "measure": "fields", "limit": MAX_FIELDS,
                          "value": MAX_FIELDS + 1}


async def test_a_fragment_spread_many_times_counts_each_spread(graphql: GraphQL) -> None:
    # given one small fragment spread many times: few fields written, many expanded
    spreads = MAX_SELECTIONS // 3 + 1
    query = "{ " + "...F " * spreads + "} fragment F on Query { __typename __typename __typename }"

    extensions = refusal(await graphql(query), "selections")

    assert extensions["value"] == 3 * spreads


async def test_cycles_and_unknown_fragments_are_left_to_validation(graphql: GraphQL) -> None:
    # given a cycle of fragments that also spreads a fragment that does not exist
    query = "{ ...A } fragment A on Query { __typename ...B } fragment B on Query { ...A ...Nowhere }"

    # when it is sent, then graphql-core's validation reports both (the measure did not loop or crash)
    body = await graphql(query)

    messages = {error["message"] for error in body["errors"]}
    assert "Cannot spread fragment 'A' within itself via 'B'." in messages
    assert "Unknown fragment 'Nowhere'." in messages
    assert {error["extensions"]["code"] for error in body["errors"]} == {"GRAPHQL_VALIDATION_FAILED"}


def test_a_long_chain_of_fragments_is_measured_without_recursion() -> None:
    # given a chain of 5,000 fragments (parsed without the token limit), each spreading the next twice
    document = parse(doubling_fragments(5000))

    # when it is measured, then it neither recurses past Python's limit nor computes 2^5000
    cost = measure(document)

    assert cost.selections == CAP
    assert cost.fields == 1


def test_graphiql_introspection_fits_with_room() -> None:
    # given GraphiQL's introspection query, when it is measured, then it is well inside every limit
    cost = measure(parse(INTROSPECTION))

    assert (cost.depth, cost.aliases) == (0, 0)  # introspection fields do not count for depth
    assert cost.fields <= MAX_FIELDS // 2
    assert cost.selections <= MAX_SELECTIONS // 2
    assert cost.repeats <= 2


def same_name(copies: int, argument: str) -> str:
    """``copies`` of one field with the same argument: validation compares every pair and finds no conflict."""
    return "{ " + f'__type(name: "{argument}") {{ name }} ' * copies + "}"


def same_mutation(copies: int, argument: str) -> str:
    return "mutation { " + f'deleteCharacter(id: "{argument}") ' * copies + "}"


@pytest.mark.parametrize(
    ("query", "repeats"),
    [
        ("{ id id __typename }", 2),
        # an alias is the response name
        ("{ a: id b: id id }", 1),
        # inline fragments and spreads merge into the selection set; a fragment spread twice there counts once
        ("{ id ... on Query { id } ...F ...F } fragment F on Query { id ...G } fragment G on Query { id }", 4),
        # below n same-named fields, each subfield counts n times
        ("{ a { b b } a { b b } a { c } }", 6),
        ("{ a { ...F } a { ...F } } fragment F on A { b { c c } }", 4),
        # a fragment's own selection sets count, used or not
        ("{ id } fragment F on Query { x x x }", 3),
    ],
)
def test_same_named_fields_are_counted_as_validation_merges_them(query: str, repeats: int) -> None:
    assert measure(parse(query)).repeats == repeats


async def test_many_fields_of_one_response_name_are_refused_before_validation(graphql: GraphQL) -> None:
    # given 199 copies of one mutation with the same 470-character argument, 98 KB within every other limit
    # (validation compared each pair, printing both arguments: 47 ms; as many __type(name:) 157 ms)
    query = same_mutation(199, "x" * 470)
    # when it is sent, then it is refused naming the count
    extensions = refusal(await graphql(query), "repeats")
    assert (extensions["limit"], extensions["value"]) == (MAX_REPEATS, 199)


async def test_fields_of_one_response_name_up_to_the_limit_run(graphql: GraphQL) -> None:
    # given MAX_REPEATS copies of one field (and the same once more, spread from a fragment)
    at_limit = same_name(MAX_REPEATS, "Query")
    over = at_limit[:-1] + "...F } fragment F on Query { __type(name: \"Query\") { name } }"
    # when each is sent, then the first runs and the second is refused
    assert await graphql(at_limit) == {"data": {"__type": {"name": "Query"}}}
    assert refusal(await graphql(over), "repeats")["value"] == MAX_REPEATS + 1


def test_relay_style_fragments_repeating_id_fit() -> None:
    # given a screen whose components each spread a fragment selecting id and __typename on the same objects
    components = 8
    fragments = " ".join(
        f"fragment C{i} on CharacterConnection {{ edges {{ cursor node {{ id __typename name }} }} }}"
        for i in range(components)
    )
    spreads = " ".join(f"...C{i}" for i in range(components))
    query = f"{{ characters(first: 10) {{ {spreads} }} }} {fragments}"
    # then it is measured by its repeats, well inside the limit
    assert measure(parse(query)).repeats == components
    assert components <= MAX_REPEATS // 2


async def test_a_refused_document_is_cached_as_refused(graphql: GraphQL) -> None:
    # given a document over the limits, sent once
    query = doubling_fragments(33)
    first = await graphql(query)

    # when it is sent again, then the cache holds the refusal and the answer is the same
    cached = LimitedCachedDocuments.documents.errors(query)
    assert cached is not None and [error.extensions for error in cached] == [
        {"code": "GRAPHQL_VALIDATION_FAILED", "measure": "selections", "limit": MAX_SELECTIONS, "value": 2**33}
    ]
    assert await graphql(query) == first


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_subscription_over_a_websocket_goes_through_the_same_gate(
    live_server: str, alice: uuid.UUID, protocol: str
) -> None:
    # given a socket, and a subscription made of doubling fragments (2^40 fields expanded)
    query = doubling_fragments(40, on="Subscription", operation="subscription")
    async with GraphQLSocket.open(live_server, protocol=protocol, token=token_for(alice)) as socket:
        # when it subscribes
        refused = await socket.subscribe(query)
        results = await socket.results_until_complete(refused)
        # then the operation gets the refusal, and the socket stays open for the next (the cached refusal)
        again = await socket.results_until_complete(await socket.subscribe(query))

    assert again == [{**results[0], "id": again[0]["id"]}]
    assert len(results) == 1
    assert error_codes_of(results[0]) == ["GRAPHQL_VALIDATION_FAILED"]
    assert errors_of(results[0])[0]["extensions"]["measure"] == "selections"
    assert errors_of(results[0])[0]["extensions"]["value"] == 2**40


async def test_a_query_over_a_websocket_goes_through_the_same_gate(live_server: str, alice: uuid.UUID) -> None:
    # given a graphql-transport-ws socket (which carries queries too), and a doubling query
    async with GraphQLSocket.open(live_server, token=token_for(alice)) as socket:
        refused = await socket.subscribe(doubling_fragments(40))
        results = await socket.results_until_complete(refused)
        fine = await socket.subscribe("{ __typename }")
        answers = await socket.results_until_complete(fine)

    # then the query is refused by the same measure, and the next one answers
    assert error_codes_of(results[0]) == ["GRAPHQL_VALIDATION_FAILED"]
    assert errors_of(results[0])[0]["extensions"]["measure"] == "selections"
    assert answers[0]["payload"] == {"data": {"__typename": "Query"}}


async def test_a_document_past_the_character_limit_is_refused_before_validation(graphql: GraphQL) -> None:
    # given thirty aliases of one field whose string arguments take the document past the character limit
    argument = "é" * (MAX_DOCUMENT_CHARS // 30)
    fields = " ".join(f'a{i}: signedImageUrl(ttlSeconds: "{argument}") {{ url }}' for i in range(30))
    query = "query { characters(first: 1) { edges { node { " + fields + " } } } }"
    assert len(query) > MAX_DOCUMENT_CHARS

    # when it is sent, then it is refused naming its length, without being validated
    extensions = refusal(await graphql(query), "characters")

    assert (extensions["limit"], extensions["value"]) == (MAX_DOCUMENT_CHARS, len(query))


async def test_a_document_at_the_character_limit_is_validated(graphql: GraphQL) -> None:
    # given the same shape just under the limit
    argument = "é" * (MAX_DOCUMENT_CHARS // 30 - 60)
    fields = " ".join(f'a{i}: signedImageUrl(ttlSeconds: "{argument}") {{ url }}' for i in range(30))
    query = "query { characters(first: 1) { edges { node { " + fields + " } } } }"
    assert len(query) <= MAX_DOCUMENT_CHARS

    # when it is sent, then validation answers it: each string is not an Int
    body = await graphql(query)

    assert body["data"] is None
    assert {error["extensions"]["code"] for error in body["errors"]} == {"GRAPHQL_VALIDATION_FAILED"}
    assert len(body["errors"]) == 30
