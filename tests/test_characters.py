"""Character CRUD through the real /graphql endpoint."""

from __future__ import annotations

import uuid

import asyncpg

from tests.conftest import GraphQL
from tests.support import only_error

CHARACTER_FIELDS = """
    id name description appearanceTags traits persona gender contentRating
    sceneBehaviorRules imageUrl referenceImageUrl seedLocked createdAt updatedAt
"""
CREATE = f"mutation($input: CreateCharacterInput!) {{ createCharacter(input: $input) {{ {CHARACTER_FIELDS} }} }}"
GET = f"query($id: ID!) {{ character(id: $id) {{ {CHARACTER_FIELDS} }} }}"
UPDATE = (
    "mutation($id: ID!, $input: UpdateCharacterInput!) "
    f"{{ updateCharacter(id: $id, input: $input) {{ {CHARACTER_FIELDS} }} }}"
)
DELETE = "mutation($id: ID!) { deleteCharacter(id: $id) }"

FULL_INPUT = {
    "name": "  Seraphine Vale  ",
    "description": "A wandering alchemist with silver hair.",
    "appearanceTags": ["silver hair", "green eyes", "silver hair", " cloak "],
    "traits": "curious, stubborn",
    "persona": "Speaks in riddles.",
    "gender": "female",
    "contentRating": "NSFW",
    "sceneBehaviorRules": {"characterLayers": {"voice": "soft", "limits": [1, 2.5, None, True]}},
    "imageUrl": "https://images.example.com/seraphine.png",
    "referenceImageUrl": "https://images.example.com/seraphine-ref.png",
}


async def create_character(graphql: GraphQL, user: uuid.UUID, **overrides: object) -> dict:
    body = await graphql(CREATE, {"input": {"name": "Ann", "description": "A knight.", **overrides}}, user=user)
    assert "errors" not in body, body
    return body["data"]["createCharacter"]


async def test_create_stores_every_field_cleaned(graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID) -> None:
    # given a full input with padding and a duplicate tag
    # when alice creates the character
    body = await graphql(CREATE, {"input": FULL_INPUT}, user=alice)

    # then the answer and the stored row hold the cleaned values
    character = body["data"]["createCharacter"]
    assert character["name"] == "Seraphine Vale"
    assert character["appearanceTags"] == ["silver hair", "green eyes", "cloak"]
    assert character["contentRating"] == "NSFW"
    assert character["sceneBehaviorRules"] == FULL_INPUT["sceneBehaviorRules"]
    assert character["imageUrl"] == FULL_INPUT["imageUrl"]
    assert character["seedLocked"] is None
    row = await pool.fetchrow("SELECT * FROM characters WHERE id = $1", uuid.UUID(character["id"]))
    assert row is not None
    assert row["user_id"] == alice
    assert row["name"] == "Seraphine Vale"
    assert row["content_rating"] == "nsfw"
    assert row["scene_behavior_rules"] == FULL_INPUT["sceneBehaviorRules"]


async def test_create_with_only_required_fields_uses_defaults(graphql: GraphQL, alice: uuid.UUID) -> None:
    character = await create_character(graphql, alice)

    assert character["contentRating"] == "SFW"
    assert character["appearanceTags"] == []
    assert character["traits"] is None and character["sceneBehaviorRules"] is None and character["imageUrl"] is None
    assert character["createdAt"] == character["updatedAt"]


async def test_get_returns_the_stored_character(graphql: GraphQL, alice: uuid.UUID) -> None:
    created = (await graphql(CREATE, {"input": FULL_INPUT}, user=alice))["data"]["createCharacter"]

    body = await graphql(GET, {"id": created["id"]}, user=alice)

    assert body == {"data": {"character": created}}


async def test_update_changes_only_the_given_fields(graphql: GraphQL, alice: uuid.UUID) -> None:
    created = (await graphql(CREATE, {"input": FULL_INPUT}, user=alice))["data"]["createCharacter"]

    body = await graphql(
        UPDATE, {"id": created["id"], "input": {"persona": "Quiet now.", "contentRating": "SFW"}}, user=alice
    )

    updated = body["data"]["updateCharacter"]
    assert updated["persona"] == "Quiet now."
    assert updated["contentRating"] == "SFW"
    unchanged = {key: value for key, value in created.items() if key not in ("persona", "contentRating", "updatedAt")}
    assert {key: updated[key] for key in unchanged} == unchanged
    assert updated["updatedAt"] > created["updatedAt"]


async def test_update_with_null_clears_optional_fields(graphql: GraphQL, alice: uuid.UUID) -> None:
    created = (await graphql(CREATE, {"input": FULL_INPUT}, user=alice))["data"]["createCharacter"]

    body = await graphql(
        UPDATE,
        {
            "id": created["id"],
            "input": {"traits": None, "sceneBehaviorRules": None, "imageUrl": None, "appearanceTags": None},
        },
        user=alice,
    )

    updated = body["data"]["updateCharacter"]
    assert updated["traits"] is None
    assert updated["sceneBehaviorRules"] is None
    assert updated["imageUrl"] is None
    assert updated["appearanceTags"] == []
    assert updated["referenceImageUrl"] == FULL_INPUT["referenceImageUrl"]


async def test_update_cannot_clear_required_fields(graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID) -> None:
    created = await create_character(graphql, alice)

    body = await graphql(UPDATE, {"id": created["id"], "input": {"name": None}}, user=alice)

    error = only_error(body)
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "name"}
    assert await pool.fetchval("SELECT name FROM characters WHERE id = $1", uuid.UUID(created["id"])) == "Ann"


async def test_empty_update_returns_the_character_unchanged(graphql: GraphQL, alice: uuid.UUID) -> None:
    created = await create_character(graphql, alice)

    body = await graphql(UPDATE, {"id": created["id"], "input": {}}, user=alice)

    assert body["data"]["updateCharacter"]["updatedAt"] == created["updatedAt"]


async def test_delete_removes_the_character(graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID) -> None:
    created = await create_character(graphql, alice)

    body = await graphql(DELETE, {"id": created["id"]}, user=alice)

    assert body == {"data": {"deleteCharacter": created["id"]}}
    assert await pool.fetchval("SELECT count(*) FROM characters") == 0
    again = await graphql(DELETE, {"id": created["id"]}, user=alice)
    assert only_error(again)["extensions"]["code"] == "NOT_FOUND"


async def test_image_models_are_public_and_default_first(graphql: GraphQL) -> None:
    body = await graphql("{ imageModels { modelKey provider isDefault } }")

    models = body["data"]["imageModels"]
    assert models[0] == {"modelKey": "local/portrait-v1", "provider": "LOCAL", "isDefault": True}
    assert {"modelKey": "fal-ai/bytedance/seedream/v4/text-to-image", "provider": "FAL", "isDefault": False} in models


async def test_viewer_is_the_token_subject(graphql: GraphQL, alice: uuid.UUID) -> None:
    body = await graphql("{ viewer { id } }", user=alice)

    assert body == {"data": {"viewer": {"id": str(alice)}}}
