"""A user sees only their own characters, and a foreign id looks exactly like a missing one."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from tests.conftest import GraphQL
from tests.test_characters import DELETE, GET, UPDATE, create_character

LIST = "{ characters(first: 100) { edges { node { id name } } } }"


@pytest.mark.parametrize(
    "operation,variables",
    [
        (GET, {}),
        (UPDATE, {"input": {"name": "Stolen"}}),
        (DELETE, {}),
    ],
    ids=["read", "update", "delete"],
)
async def test_another_users_character_is_not_found_like_a_missing_one(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID, operation: str, variables: dict
) -> None:
    # given alice's character
    character = await create_character(graphql, alice)

    # when bob reads, updates or deletes it, and also a random missing id
    foreign = await graphql(operation, {"id": character["id"], **variables}, user=bob)
    missing = await graphql(operation, {"id": str(uuid.uuid4()), **variables}, user=bob)

    # then both answers are the same NOT_FOUND, and alice's row is untouched
    assert foreign["errors"][0]["extensions"] == {"code": "NOT_FOUND"}
    assert foreign == missing
    row = await pool.fetchrow("SELECT name, user_id FROM characters WHERE id = $1", uuid.UUID(character["id"]))
    assert row is not None
    assert (row["name"], row["user_id"]) == ("Ann", alice)


async def test_lists_hold_only_the_viewers_characters(graphql: GraphQL, alice: uuid.UUID, bob: uuid.UUID) -> None:
    mine = {(await create_character(graphql, alice, name=f"A{i}"))["id"] for i in range(3)}
    theirs = {(await create_character(graphql, bob, name=f"B{i}"))["id"] for i in range(2)}

    alice_ids = {edge["node"]["id"] for edge in (await graphql(LIST, user=alice))["data"]["characters"]["edges"]}
    bob_ids = {edge["node"]["id"] for edge in (await graphql(LIST, user=bob))["data"]["characters"]["edges"]}

    assert alice_ids == mine
    assert bob_ids == theirs
