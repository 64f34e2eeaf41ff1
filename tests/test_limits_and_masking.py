"""Query limits, and unexpected errors masked for the client but kept in the log."""

from __future__ import annotations

import logging
import uuid

import asyncpg
import pytest

from graph.schema import MAX_ALIASES, MAX_DEPTH, MAX_TOKENS
from tests.conftest import GraphQL
from tests.support import only_error

INTROSPECTION = """
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) {
    name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType {
    kind name ofType { kind name ofType { kind name } } } } } } }
}
"""


async def test_graphiql_introspection_fits_the_limits(graphql: GraphQL) -> None:
    body = await graphql(INTROSPECTION)

    assert "errors" not in body
    assert body["data"]["__schema"]["queryType"] == {"name": "Query"}


async def test_too_many_aliases_are_refused(graphql: GraphQL, alice: uuid.UUID) -> None:
    query = "{ " + " ".join(f"a{i}: viewer {{ id }}" for i in range(MAX_ALIASES + 1)) + " }"

    body = await graphql(query, user=alice)

    assert only_error(body)["extensions"] == {
        "code": "GRAPHQL_VALIDATION_FAILED", "measure": "aliases", "limit": MAX_ALIASES, "value": MAX_ALIASES + 1
    }
    assert "data" not in body or body["data"] is None


async def test_a_query_at_the_alias_limit_runs(graphql: GraphQL, alice: uuid.UUID) -> None:
    query = "{ " + " ".join(f"a{i}: viewer {{ id }}" for i in range(MAX_ALIASES)) + " }"

    body = await graphql(query, user=alice)

    assert body["data"]["a0"] == {"id": str(alice)}


async def test_too_deep_queries_are_refused(graphql: GraphQL, alice: uuid.UUID) -> None:
    # The schema has no cycles yet, so no legal query is deep; the limiter runs on the
    # document itself, so a chain of (unknown) nested selections proves it is on.
    body = await graphql(_nested_query(MAX_DEPTH + 1), user=alice)

    error = only_error(body)
    assert error["message"] == (
        f"Operation 'anonymous' nests {MAX_DEPTH + 1} fields deep; at most {MAX_DEPTH} are allowed."
    )
    assert error["extensions"] == {
        "code": "GRAPHQL_VALIDATION_FAILED", "measure": "depth", "limit": MAX_DEPTH, "value": MAX_DEPTH + 1
    }
    assert body["data"] is None


async def test_depth_at_the_limit_is_not_flagged(graphql: GraphQL, alice: uuid.UUID) -> None:
    body = await graphql(_nested_query(MAX_DEPTH), user=alice)

    # (the unknown fields are refused by validation, which the depth let it reach)
    assert body["errors"]
    assert not [error for error in body["errors"] if "measure" in error["extensions"]]


def _nested_query(depth: int) -> str:
    """A document nested ``depth`` levels deep below ``characters``."""
    inner = "id"
    for level in range(depth - 1):
        inner = f"f{level} {{ {inner} }}"
    return "{ characters { " + inner + " } }"


async def test_too_many_tokens_are_refused(graphql: GraphQL, alice: uuid.UUID) -> None:
    query = "{ viewer { " + "id " * MAX_TOKENS + "} }"

    body = await graphql(query, user=alice)

    error = only_error(body)
    assert error["extensions"] == {"code": "GRAPHQL_PARSE_FAILED"}
    assert error["message"] == f"Syntax Error: Document contains more than {MAX_TOKENS} tokens. Parsing aborted."


async def test_an_unexpected_error_is_masked_and_logged(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID, caplog: pytest.LogCaptureFixture
) -> None:
    # given a database whose characters table has gone missing (an operator's mistake)
    await pool.execute("ALTER TABLE characters RENAME TO characters_away")
    try:
        # when alice lists her characters
        with caplog.at_level(logging.ERROR, logger="graph.errors"):
            body = await graphql("{ characters { edges { node { id } } } }", user=alice)
    finally:
        await pool.execute("ALTER TABLE characters_away RENAME TO characters")

    # then she gets a generic error with a code, and no SQL or stack trace
    error = only_error(body)
    assert error == {
        "message": "Internal server error.",
        "locations": [{"line": 1, "column": 3}],
        "path": ["characters"],
        "extensions": {"code": "INTERNAL_SERVER_ERROR"},
    }
    # and the log holds the real cause with its traceback
    records = [record for record in caplog.records if record.name == "graph.errors"]
    assert len(records) == 1
    assert records[0].exc_info is not None
    assert "characters" in str(records[0].exc_info[1])


async def test_expected_errors_are_not_logged_as_crashes(
    graphql: GraphQL, alice: uuid.UUID, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await graphql('{ character(id: "00000000-0000-0000-0000-000000000000") { id } }', user=alice)
        await graphql("{ nope }", user=alice)

    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
