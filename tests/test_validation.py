"""Bad input: a BAD_USER_INPUT (or GraphQL validation) error, never a 500, and nothing stored."""

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest

from resolvers.validation import looks_signed
from tests.conftest import GraphQL, token_for
from tests.support import only_error, request_id_checked
from tests.test_characters import CREATE, UPDATE, create_character

VALID = {"name": "Ann", "description": "A knight."}

BAD_INPUTS = {
    "blank name": ({"name": "   "}, "name"),
    "blank description": ({"description": "\n\t "}, "description"),
    "name too long": ({"name": "x" * 101}, "name"),
    "description too long": ({"description": "x" * 4001}, "description"),
    "traits too long": ({"traits": "x" * 1001}, "traits"),
    "persona too long": ({"persona": "x" * 4001}, "persona"),
    "gender too long": ({"gender": "x" * 51}, "gender"),
    "too many tags": ({"appearanceTags": [f"tag{i}" for i in range(31)]}, "appearanceTags"),
    "tag too long": ({"appearanceTags": ["x" * 51]}, "appearanceTags"),
    "blank tag": ({"appearanceTags": ["ok", " "]}, "appearanceTags"),
    "NUL in name": ({"name": "An\x00n"}, "name"),
    "NUL in rules": ({"sceneBehaviorRules": {"a": "b\x00"}}, "sceneBehaviorRules"),
    "rules not an object": ({"sceneBehaviorRules": [1, 2]}, "sceneBehaviorRules"),
    "rules too big": ({"sceneBehaviorRules": {"a": "x" * 17000}}, "sceneBehaviorRules"),
    "rules too deep": ({"sceneBehaviorRules": json.loads('{"a":' * 11 + "1" + "}" * 11)}, "sceneBehaviorRules"),
    "image url not http": ({"imageUrl": "javascript:alert(1)"}, "imageUrl"),
    "image url relative": ({"imageUrl": "/images/a.png"}, "imageUrl"),
    "image url signed by supabase": (
        {"imageUrl": "https://x.supabase.co/storage/v1/object/sign/user-library/a.png?token=abc"},
        "imageUrl",
    ),
    "image url presigned by s3": ({"imageUrl": "https://b.s3.amazonaws.com/a.png?X-Amz-Signature=abc"}, "imageUrl"),
    "image url signed, percent-encoded": (
        {"imageUrl": "https://x.supabase.co/storage/v1/object/%73ign/user-library/a.png?token=abc"},
        "imageUrl",
    ),
    "reference url signed, encoded twice": (
        {"referenceImageUrl": "https://x.supabase.co/storage/v1/object/%2573ign/user-library/a.png?token=abc"},
        "referenceImageUrl",
    ),
    "image url presigned, percent-encoded": (
        {"imageUrl": "https://b.s3.amazonaws.com/a.png?X-Amz-%53ignature=abc"},
        "imageUrl",
    ),
    "image url too long": ({"imageUrl": "https://example.com/" + "a" * 2100}, "imageUrl"),
}


@pytest.mark.parametrize("overrides,field", BAD_INPUTS.values(), ids=list(BAD_INPUTS))
async def test_bad_create_input_is_refused_and_nothing_stored(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID, overrides: dict, field: str
) -> None:
    body = await graphql(CREATE, {"input": {**VALID, **overrides}}, user=alice)

    error = only_error(body)
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}
    assert body["data"] == {"createCharacter": None}
    assert await pool.fetchval("SELECT count(*) FROM characters") == 0


@pytest.mark.parametrize("overrides,field", BAD_INPUTS.values(), ids=list(BAD_INPUTS))
async def test_bad_update_input_leaves_the_character_as_it_was(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID, overrides: dict, field: str
) -> None:
    character = await create_character(graphql, alice)
    before = await pool.fetchrow("SELECT * FROM characters WHERE id = $1", uuid.UUID(character["id"]))

    body = await graphql(UPDATE, {"id": character["id"], "input": overrides}, user=alice)

    assert only_error(body)["extensions"] == {"code": "BAD_USER_INPUT", "field": field}
    after = await pool.fetchrow("SELECT * FROM characters WHERE id = $1", uuid.UUID(character["id"]))
    assert before is not None and after is not None
    assert dict(after) == dict(before)


async def test_lone_surrogate_in_raw_json_is_bad_input(client, pool: asyncpg.Pool, alice: uuid.UUID) -> None:
    raw = '{"query": "mutation { createCharacter(input: {name: \\"\\\\ud800\\", description: \\"d\\"}) { id } }"}'
    response = await client.post(
        "/graphql",
        content=raw,
        headers={"content-type": "application/json", "Authorization": f"Bearer {token_for(alice)}"},
    )

    assert response.status_code == 200
    body = request_id_checked(response.json(), response.headers)
    assert only_error(body)["extensions"] == {"code": "GRAPHQL_PARSE_FAILED"}
    assert await pool.fetchval("SELECT count(*) FROM characters") == 0


@pytest.mark.parametrize("value", ["NaN", "Infinity", str(2**70), str(-(2**63) - 1), str(2**63)])
async def test_json_numbers_postgresql_cannot_store_are_refused(
    client, pool: asyncpg.Pool, alice: uuid.UUID, value: str
) -> None:
    # NaN and infinities are not JSON, and integers past 64 bits would be rounded: the request is refused
    # before GraphQL runs (server/graphql_request.py), and nothing is stored.
    raw = (
        '{"query": "mutation($r: JSON) { createCharacter(input: {name: \\"A\\", description: \\"d\\", '
        'sceneBehaviorRules: $r}) { id } }", "variables": {"r": {"x": ' + value + "}}}"
    )
    response = await client.post(
        "/graphql",
        content=raw,
        headers={"content-type": "application/json", "Authorization": f"Bearer {token_for(alice)}"},
    )

    assert response.status_code == 400
    assert only_error(request_id_checked(response.json(), response.headers))["extensions"] == {"code": "BAD_REQUEST"}
    assert await pool.fetchval("SELECT count(*) FROM characters") == 0


async def test_unknown_enum_value_is_a_variable_error(graphql: GraphQL, alice: uuid.UUID) -> None:
    body = await graphql(CREATE, {"input": {**VALID, "contentRating": "PG13"}}, user=alice)

    assert only_error(body)["extensions"] == {"code": "BAD_USER_INPUT"}


async def test_unknown_enum_literal_fails_validation(graphql: GraphQL, alice: uuid.UUID) -> None:
    body = await graphql(
        'mutation { createCharacter(input: {name: "A", description: "B", contentRating: PG13}) { id } }', user=alice
    )

    assert only_error(body)["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}


async def test_missing_required_input_is_a_variable_error(graphql: GraphQL, alice: uuid.UUID) -> None:
    body = await graphql(CREATE, {"input": {"name": "A"}}, user=alice)

    assert only_error(body)["extensions"] == {"code": "BAD_USER_INPUT"}


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "", "1' OR '1'='1"])
async def test_malformed_ids_are_bad_input(graphql: GraphQL, alice: uuid.UUID, bad_id: str) -> None:
    body = await graphql("query($id: ID!) { character(id: $id) { id } }", {"id": bad_id}, user=alice)

    assert only_error(body)["extensions"] == {"code": "BAD_USER_INPUT", "field": "id"}


async def test_syntax_errors_have_a_code(graphql: GraphQL) -> None:
    body = await graphql("{ imageModels { ")

    assert only_error(body)["extensions"] == {"code": "GRAPHQL_PARSE_FAILED"}


async def test_unknown_fields_have_a_code(graphql: GraphQL) -> None:
    body = await graphql("{ passwords }")

    assert only_error(body)["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}


SIGNED_DISGUISES = [
    "https://x.supabase.co/storage/v1/object/sign/user-library/a.png?token=t",
    "https://x.supabase.co/storage/v1/object/%73ign/user-library/a.png?token=t",
    "https://x.supabase.co/storage/v1/object/%2573ign/user-library/a.png?token=t",
    "https://x.supabase.co/storage/v1/object/%252573ign/user-library/a.png?token=t",
    "https://x.supabase.co/storage/v1/%4F%42%4A%45%43%54/%53%49%47%4E/user-library/a.png?token=t",
    "https://x.supabase.co/STORAGE/V1/OBJECT/SIGN/user-library/a.png?token=t",
    "https://x.supabase.co/storage/v1/object//sign/user-library/a.png?token=t",
    "https://x.supabase.co/storage/v1/object/./sign/user-library/a.png?token=t",
    "https://x.supabase.co/storage/v1/object/x/../sign/user-library/a.png?token=t",
    "https://x.supabase.co/storage/v1/object%2Fsign/user-library/a.png?token=t",
    "https://b.s3.amazonaws.com/a.png?X-Amz-Signature=abc",
    "https://b.s3.amazonaws.com/a.png?x-amz-signature=abc",
    "https://b.s3.amazonaws.com/a.png?X-Amz-%53ignature=abc",
    "https://b.s3.amazonaws.com/a.png?X%2DAmz%2DSignature=abc",
    "https://b.s3.amazonaws.com/a.png?X-Amz-%2553ignature=abc",
    "https://b.s3.amazonaws.com/a.png?X-Amz-%" + "25" * 6 + "53ignature=abc",  # encoded past the decode bound
]
PERMANENT_URLS = [
    "https://example.com/a.png",
    "https://example.com/portraits/silver%20hair.png",
    "https://cdn.example.com/object/signed-portrait.png",
    "https://example.com/a.png?signature=mine",
]


@pytest.mark.parametrize("url", SIGNED_DISGUISES)
def test_signed_urls_are_recognised_however_they_are_encoded(url: str) -> None:
    assert looks_signed(url)


@pytest.mark.parametrize("url", PERMANENT_URLS)
def test_permanent_urls_are_not_taken_for_signed_ones(url: str) -> None:
    assert not looks_signed(url)


async def test_an_encoded_signed_url_is_refused_and_a_permanent_one_kept(graphql: GraphQL, alice: uuid.UUID) -> None:
    # given a signed URL disguised by percent-encoding, and a permanent URL with an encoded space
    disguised = "https://x.supabase.co/storage/v1/object/%73ign/user-library/a.png?token=t"
    permanent = "https://example.com/portraits/silver%20hair.png"
    # when each is given as imageUrl
    refused = await graphql(CREATE, {"input": {**VALID, "imageUrl": disguised}}, user=alice)
    kept = await graphql(CREATE, {"input": {**VALID, "imageUrl": permanent}}, user=alice)
    # then the signed one is refused and the permanent one stored as given
    assert only_error(refused)["extensions"] == {"code": "BAD_USER_INPUT", "field": "imageUrl"}
    assert "signed URL" in only_error(refused)["message"]
    assert kept["data"]["createCharacter"]["imageUrl"] == permanent
