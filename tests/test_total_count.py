"""Connections' totalCount: the size of the whole filtered list, costing one count query only when selected."""

from __future__ import annotations

import uuid

import asyncpg

from graph.schema import MAX_TOTAL_COUNTS
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



def aliased_counts(n: int) -> str:
    """``n`` aliased characters lists, each asking for its totalCount under its own search."""
    return "{ " + " ".join(f'c{i}: characters(first: 1, search: "n{i}") {{ totalCount }}' for i in range(n)) + " }"


async def test_a_document_may_ask_for_at_most_ten_counts(
    settings: Settings, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    """Given alice's characters (each count reads every one of them: 240 ms at 200,000),
    when she asks for 10 aliased totalCounts, then for 11,
    then the 10 are answered, and the 11 are refused before anything runs (no count query) with the measure, limit
    and value: without the limit 30 aliases made one request hold the database for 3.3 s."""
    assert MAX_TOTAL_COUNTS == 10
    await insert_characters(pool, alice, 3)
    async with graphql_logging_statements(settings) as (graphql, statements):
        ten = await graphql(aliased_counts(10), user=alice)
        statements.clear()
        eleven = await graphql(aliased_counts(11), user=alice)
        eleven_statements = list(statements)

    assert [ten["data"][f"c{i}"]["totalCount"] for i in range(10)] == [0] * 10
    assert eleven["data"] is None
    [error] = eleven["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert (error["extensions"]["measure"], error["extensions"]["limit"], error["extensions"]["value"]) == (
        "totalCount", 10, 11
    )
    assert counts(eleven_statements) == []



def counted_through_fragments(lists: int) -> str:
    """One totalCount written, in a fragment spread under ``lists`` aliased lists (half of them inside another
    fragment, spread twice in one selection set: graphql-core collects it once there)."""
    inner = lists // 2
    outer = lists - inner
    return (
        "query { ...Inner ...Inner "
        + " ".join(f'o{i}: characters(first: 1, search: "o{i}") {{ ...Count }}' for i in range(outer))
        + " }\nfragment Inner on Query { "
        + " ".join(f'i{i}: characters(first: 1, search: "i{i}") {{ ...Count }}' for i in range(inner))
        + " }\nfragment Count on CharacterConnection { totalCount }\n"
    )


async def test_counts_in_fragments_are_counted_each_time_they_would_run(graphql: GraphQL, alice: uuid.UUID) -> None:
    """Given one totalCount written in a fragment,
    when it is spread under 10 aliased lists, then under 11,
    then the 10 are answered (a fragment spread twice in one selection set runs once, and counts once) and the 11
    are refused for 11 counts: what would run is counted, not what is written."""
    ten = await graphql(counted_through_fragments(10), user=alice)
    eleven = await graphql(counted_through_fragments(11), user=alice)

    assert "errors" not in ten and len(ten["data"]) == 10
    assert all(value == {"totalCount": 0} for value in ten["data"].values())
    [error] = eleven["errors"]
    assert (error["extensions"]["measure"], error["extensions"]["value"]) == ("totalCount", 11)
