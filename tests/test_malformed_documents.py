"""Malformed documents get a GraphQL error with a stable code over HTTP: never a 500, never INTERNAL_SERVER_ERROR."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from graph.schema import MAX_TOKENS
from tests.conftest import token_for
from tests.realtime_support import PROTOCOLS, TRANSPORT_WS, GraphQLSocket, error_codes_of

CREATE = "mutation {{ createCharacter(input: {input}) {{ id }} }}"


def nested_list(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


def nested_object(levels: int) -> str:
    return "{a: " * levels + "1" + "}" * levels


def first_as(literal: str) -> str:
    return "{ characters(first: " + literal + ") { edges { cursor } } }"


# (what, request body, the code every error must carry)
MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("spread of an unknown fragment", {"query": "{ ...Nowhere }"}, "GRAPHQL_VALIDATION_FAILED"),
    ("unknown fragment inside a field", {"query": "{ viewer { ...Nowhere } }"}, "GRAPHQL_VALIDATION_FAILED"),
    (
        "fragment cycle",
        {"query": "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }"},
        "GRAPHQL_VALIDATION_FAILED",
    ),
    ("fragment spreading itself", {"query": "{ ...A } fragment A on Query { ...A }"}, "GRAPHQL_VALIDATION_FAILED"),
    ("unknown directive", {"query": "{ imageModels @nope { modelKey } }"}, "GRAPHQL_VALIDATION_FAILED"),
    ("operation name not found", {"query": "query A { __typename }", "operationName": "B"}, "BAD_REQUEST"),
    ("operation name on an anonymous operation", {"query": "{ __typename }", "operationName": "B"}, "BAD_REQUEST"),
    ("fragments and no operation", {"query": "fragment A on Query { __typename }"}, "BAD_REQUEST"),
    ("several anonymous operations", {"query": "{ __typename } { imageModels { modelKey } }"},
     "GRAPHQL_VALIDATION_FAILED"),
    ("Int past 32 bits", {"query": "{ characters(first: 99999999999999999999999) { edges { cursor } } }"},
     "GRAPHQL_VALIDATION_FAILED"),
    ("Int of a thousand digits", {"query": "{ characters(first: " + "9" * 1000 + ") { edges { cursor } } }"},
     "GRAPHQL_VALIDATION_FAILED"),
    ("float past double range for an Int", {"query": "{ characters(first: 1e400) { edges { cursor } } }"},
     "GRAPHQL_VALIDATION_FAILED"),
    ("huge Int in a variable default",
     {"query": "query($n: Int = 1e400) { characters(first: $n) { edges { cursor } } }"},
     "GRAPHQL_VALIDATION_FAILED"),
    ("lone surrogate escape in a string literal", {"query": '{ character(id: "\\ud800") { id } }'},
     "GRAPHQL_PARSE_FAILED"),
    ("lone low surrogate escape", {"query": '{ character(id: "\\udc00x") { id } }'}, "GRAPHQL_PARSE_FAILED"),
    ("surrogate pair escape, not an id", {"query": '{ character(id: "\\ud83d\\ude00") { id } }'},
     "BAD_USER_INPUT"),
    # (refused by the HTTP layer's strict JSON, 400: server/graphql_request.py)
    ("lone surrogate in the JSON text of a string literal", {"query": '{ character(id: "\ud800") { id } }'},
     "BAD_REQUEST"),
    ("lone surrogate in the JSON text of a field name", {"query": "{ vi\ud800ewer { id } }"}, "BAD_REQUEST"),
    ("lone surrogate in an operation name", {"query": "query A { __typename }", "operationName": "\ud800"},
     "BAD_REQUEST"),
    ("deeply nested list literal", {"query": first_as(nested_list(60))}, "GRAPHQL_VALIDATION_FAILED"),
    ("list literal past the parser's nesting", {"query": first_as(nested_list(600))}, "GRAPHQL_PARSE_FAILED"),
    ("deeply nested object literal", {"query": first_as(nested_object(60))}, "GRAPHQL_VALIDATION_FAILED"),
    ("selections past the parser's nesting", {"query": "{" + "a{" * 600 + "b" + "}" * 600 + "}"},
     "GRAPHQL_PARSE_FAILED"),
    ("document over the token limit", {"query": "{ " + "__typename " * (MAX_TOKENS + 1) + "}"},
     "GRAPHQL_PARSE_FAILED"),
    # (over the character limit: refused by its length where the request is read, before it is lexed)
    ("a megabyte of comment and nothing else", {"query": "#" + "x" * 1_000_000}, "GRAPHQL_VALIDATION_FAILED"),
    ("a megabyte string literal past the token limit",
     {"query": "{ " + '__typename(a: "' + "x" * 1_000_000 + '") ' + "__typename " * MAX_TOKENS + "}"},
     "GRAPHQL_VALIDATION_FAILED"),
    ("empty document", {"query": ""}, "BAD_REQUEST"),
    ("unused variable", {"query": "query($v: Int) { __typename }"}, "GRAPHQL_VALIDATION_FAILED"),
    ("undefined variable", {"query": "{ characters(first: $n) { edges { cursor } } }"}, "GRAPHQL_VALIDATION_FAILED"),
    ("variable of an unknown type", {"query": "query($v: Nope) { __typename }"}, "GRAPHQL_VALIDATION_FAILED"),
    ("whitespace only", {"query": "   \n\t "}, "GRAPHQL_PARSE_FAILED"),
    ("unterminated string", {"query": '{ character(id: "abc) { id } }'}, "GRAPHQL_PARSE_FAILED"),
    ("subscription over HTTP", {"query": "subscription { portraitJobs { id } }"}, "BAD_REQUEST"),
]


def post(client: httpx.AsyncClient, body: dict[str, Any], user: uuid.UUID) -> Any:
    # The body is sent as JSON text the standard library writes, lone surrogates as \\u escapes, as a client would.
    return client.post(
        "/graphql",
        content=json.dumps(body),
        # (one request id for every request: the tests compare two answers whole)
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token_for(user)}",
            "X-Request-ID": "malformed-documents",
        },
    )


def assert_graphql_errors(response: httpx.Response, code: str) -> list[dict[str, Any]]:
    assert response.status_code < 500, response.text
    assert "Internal server error" not in response.text
    body = response.json()
    assert isinstance(body, dict), body
    errors = body.get("errors")
    assert isinstance(errors, list) and errors, body
    for error in errors:
        assert isinstance(error.get("message"), str) and error["message"], error
        assert error.get("extensions", {}).get("code") == code, body
    if code != "BAD_USER_INPUT":  # (a field's bad argument nulls that field only)
        assert body.get("data") is None, body
    return errors


@pytest.mark.parametrize(("what", "body", "code"), MALFORMED, ids=[what for what, _, _ in MALFORMED])
async def test_a_malformed_document_gets_a_graphql_error_with_a_stable_code(
    client: httpx.AsyncClient, alice: uuid.UUID, what: str, body: dict[str, Any], code: str
) -> None:
    # given a malformed request, when it is posted twice (the second answer may come from the caches)
    first = await post(client, body, alice)
    second = await post(client, body, alice)

    # then both are GraphQL errors with the expected code, and the same
    assert_graphql_errors(first, code)
    assert_graphql_errors(second, code)
    assert second.json() == first.json()


async def test_a_deeply_nested_json_argument_is_refused_as_input(client: httpx.AsyncClient, alice: uuid.UUID) -> None:
    # given a JSON-scalar input nested as deep as the parser allows, far past the input's own bound
    rules = nested_object(60)
    query = CREATE.format(input='{name: "N", description: "D", sceneBehaviorRules: ' + rules + "}")

    # when it is posted, then it is refused as bad input, without a crash
    response = await post(client, {"query": query}, alice)

    errors = assert_graphql_errors(response, "BAD_USER_INPUT")
    assert errors[0]["extensions"]["field"] == "sceneBehaviorRules"


OVER_WEBSOCKET: list[tuple[str, dict[str, Any], str]] = [
    ("spread of an unknown fragment", {"query": "subscription { ...Nowhere }"}, "GRAPHQL_VALIDATION_FAILED"),
    ("fragment cycle", {"query": "subscription { ...A } fragment A on Subscription { ...A }"},
     "GRAPHQL_VALIDATION_FAILED"),
    ("operation name not found", {"query": "subscription A { portraitJobs { id } }", "operationName": "B"},
     "BAD_REQUEST"),
    ("fragments and no operation", {"query": "fragment A on Subscription { __typename }"}, "BAD_REQUEST"),
    ("lone surrogate escape", {"query": 'subscription { jobUpdated(id: "\\ud800") { id } }'}, "GRAPHQL_PARSE_FAILED"),
    ("huge Int", {"query": "subscription { portraitJobs(first: 1e400) { id } }"}, "GRAPHQL_VALIDATION_FAILED"),
    ("whitespace only", {"query": "  "}, "GRAPHQL_PARSE_FAILED"),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_malformed_subscriptions_get_graphql_errors_and_the_socket_stays_open(
    live_server: str, alice: uuid.UUID, protocol: str
) -> None:
    async with GraphQLSocket.open(live_server, protocol=protocol, token=token_for(alice)) as socket:
        for what, payload, code in OVER_WEBSOCKET:
            # given an open socket, when a malformed operation is sent on it
            operation = str(uuid.uuid4())
            kind = "subscribe" if protocol == TRANSPORT_WS else "start"
            await socket.send({"id": operation, "type": kind, "payload": {"variables": {}, **payload}})
            results = await socket.results_until_complete(operation)

            # then it gets one GraphQL error with the expected code, and the socket serves the next
            assert len(results) == 1, (what, results)
            assert set(error_codes_of(results[0])) == {code}, (what, results)
            assert "Internal server error" not in str(results), (what, results)
