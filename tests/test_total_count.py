"""Connections' totalCount: the size of the whole filtered list, costing one count query only when selected."""

from __future__ import annotations

import uuid

import asyncpg

from server.settings import Settings
from tests.conftest import GraphQL, graphql_logging_statements
from tests.test_pagination import insert_characters

WITHOUT_COUNT = "{ characters(first: 2) { edges { node { id } } pageInfo { hasNextPage } } }"
WITH_COUNT = "{ characters(first: 2) { totalCount edges { node { id } } pageInfo { hasNextPage } } }"
GENERATE = "mutation($prompt: String!) { generateImage(input: {prompt: $prompt}) { id } }"
CANCEL = "mutation($id: ID!) { cancelJob(id: $id) { status } }"


def counts(statements: list[str]) -> list[str]:
    return [statement for statement in statements if "count(*)" in statement]


async def test_total_count_costs_one_query_only_when_selected(
    settings: Settings, pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    """Given 5 characters of alice's and 3 of bob's, when alice lists a page of 2 without and then with totalCount,
    then the first runs no count query, and the second runs exactly one more statement, the count, answering 5."""
    await insert_characters(pool, alice, 5)
    await insert_characters(pool, bob, 3)
    async with graphql_logging_statements(settings) as (graphql, statements):
        await graphql(WITHOUT_COUNT, user=alice)  # a first request may prepare what later ones reuse
        statements.clear()

        plain = await graphql(WITHOUT_COUNT, user=alice)
        plain_statements = list(statements)
        statements.clear()
        counted = await graphql(WITH_COUNT, user=alice)
        counted_statements = list(statements)

    assert "totalCount" not in plain["data"]["characters"]
    assert counts(plain_statements) == []
    assert counted["data"]["characters"]["totalCount"] == 5
    assert len(counts(counted_statements)) == 1
    assert len(counted_statements) == len(plain_statements) + 1
    assert counted["data"]["characters"]["edges"] == plain["data"]["characters"]["edges"]


async def test_total_count_keeps_each_lists_filters(graphql: GraphQL, alice: uuid.UUID, bob: uuid.UUID) -> None:
    """Given two jobs of alice's, one canceled, and one of bob's, when each list's totalCount is asked for,
    then jobs counts alice's only, jobs(status:) only that status, and the empty lists 0."""
    first = (await graphql(GENERATE, {"prompt": "a lighthouse"}, user=alice))["data"]["generateImage"]
    await graphql(GENERATE, {"prompt": "a harbour"}, user=alice)
    await graphql(GENERATE, {"prompt": "a bridge"}, user=bob)
    await graphql(CANCEL, {"id": first["id"]}, user=alice)

    body = await graphql(
        """{
          all: jobs(first: 1) { totalCount }
          queued: jobs(first: 1, status: QUEUED) { totalCount }
          canceled: jobs(status: CANCELED) { totalCount }
          failed: jobs(status: FAILED) { totalCount }
          workspaceAssets { totalCount }
          libraryAssets { totalCount }
          characterTab: libraryAssets(tab: CHARACTERS) { totalCount }
          characters { totalCount }
        }""",
        user=alice,
    )

    assert body == {"data": {
        "all": {"totalCount": 2}, "queued": {"totalCount": 1}, "canceled": {"totalCount": 1},
        "failed": {"totalCount": 0}, "workspaceAssets": {"totalCount": 0}, "libraryAssets": {"totalCount": 0},
        "characterTab": {"totalCount": 0}, "characters": {"totalCount": 0},
    }}
