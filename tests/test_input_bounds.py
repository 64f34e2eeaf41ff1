"""Hostile input sizes: every list and text is refused by its length before its items are looked at.

Over real HTTP (uvicorn in the tests' event loop), so a check that stalled
would stall ``/healthz`` too. Elapsed times are printed for the record; the
only bound asserted is a generous one that proves nothing stalls (the
quadratic tag check this guards against took 95-217 s).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from graph.variable_bounds import MAX_LIST_ITEMS
from resolvers.characters import clean_character_fields
from resolvers.errors import BadUserInput
from resolvers.validation import clean_json_object, clean_tags
from tests.conftest import token_for
from tests.generation_support import GraphQL, create_character
from tests.support import only_error, request_id_checked
from tests.test_characters import CREATE, UPDATE

NO_STALL_SECONDS = 30
VALID = {"name": "Ann", "description": "A knight."}
GENERATE_IMAGE = "mutation($input: GenerateImageInput!) { generateImage(input: $input) { id } }"
GENERATE_PORTRAIT = (
    "mutation($input: GenerateCharacterPortraitInput!) { generateCharacterPortrait(input: $input) { id } }"
)
# One megabyte per text over HTTP keeps the body under a request-body cap of a few MB; the 10 MB
# texts are refused by the resolvers' own checks below, without the transport.
HTTP_TEXT = "x" * 1_000_000
HUGE_TEXT = "x" * 10_000_000


@pytest.fixture
async def http(live_server: str) -> AsyncIterator[httpx.AsyncClient]:
    base = live_server.replace("ws://", "http://").removesuffix("/graphql")
    async with httpx.AsyncClient(base_url=base, timeout=NO_STALL_SECONDS) as client:
        yield client


async def post_while_polling_health(
    http: httpx.AsyncClient, user: uuid.UUID, query: str, variables: dict[str, Any], *, status: int = 200
) -> tuple[dict[str, Any], float, int]:
    """POST ``query`` (raw JSON, so lone surrogates pass as escapes) while ``/healthz`` is polled.

    Returns the body, the seconds the answer took, and how many health checks answered meanwhile.
    """
    content = json.dumps({"query": query, "variables": variables})  # ensure_ascii: "\ud800" stays an escape
    headers = {"content-type": "application/json", "Authorization": f"Bearer {token_for(user)}"}
    answered = asyncio.Event()
    health_answers = 0

    async def poll_health() -> None:
        nonlocal health_answers
        while not answered.is_set():
            assert (await http.get("/healthz")).status_code == 200
            health_answers += 1
            await asyncio.sleep(0.01)

    poller = asyncio.create_task(poll_health())
    started = time.perf_counter()
    async with asyncio.timeout(NO_STALL_SECONDS):
        response = await http.post("/graphql", content=content, headers=headers)
    elapsed = time.perf_counter() - started
    answered.set()
    await poller
    assert response.status_code == status, response.text[:500]
    body: dict[str, Any] = request_id_checked(response.json(), response.headers)
    return body, elapsed, health_answers


def assert_invalid_json(body: dict[str, Any]) -> None:
    """Refused by the HTTP layer's strict JSON before any GraphQL work (server/graphql_request.py)."""
    error = only_error(body)
    assert error["extensions"] == {"code": "BAD_REQUEST"}, error
    assert error["message"].startswith("The request body is not valid JSON"), error


def assert_bad_input(body: dict[str, Any], field: str) -> None:
    error = only_error(body)
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}, error


@pytest.mark.parametrize("count", [31, 100_000])
async def test_a_long_tag_list_is_refused_before_its_tags_are_read(
    http: httpx.AsyncClient, graphql: GraphQL, alice: uuid.UUID, count: int
) -> None:
    # given a tag list of distinct tags, far past the 30 allowed
    tags = [f"tag {i}" for i in range(count)]
    # when alice creates a character with it, and updates one with it
    created, create_seconds, _ = await post_while_polling_health(
        http, alice, CREATE, {"input": {**VALID, "appearanceTags": tags}}
    )
    character = await create_character(graphql, alice)
    updated, update_seconds, health = await post_while_polling_health(
        http, alice, UPDATE, {"id": character["id"], "input": {"appearanceTags": tags}}
    )
    print(f"{count} tags refused: create {create_seconds * 1000:.0f} ms, update {update_seconds * 1000:.0f} ms")
    # then both are refused, naming the field, and the server kept answering health checks
    if count <= MAX_LIST_ITEMS:  # the schema's own bound of 30, in the character checks
        assert_bad_input(created, "appearanceTags")
        assert_bad_input(updated, "appearanceTags")
    else:  # before graphql-core coerces the list (graph/variable_bounds.py)
        for answer in (created, updated):
            extensions = only_error(answer)["extensions"]
            assert (extensions["code"], extensions["field"], extensions["measure"]) == (
                "BAD_USER_INPUT", "appearanceTags", "listItems"
            ), answer
    assert health >= 1


TEXT_FIELDS = ["name", "description", "traits", "persona", "gender", "imageUrl", "referenceImageUrl"]


@pytest.mark.parametrize("field", TEXT_FIELDS)
async def test_a_megabyte_character_text_is_refused_naming_its_field(
    http: httpx.AsyncClient, graphql: GraphQL, alice: uuid.UUID, field: str
) -> None:
    value = HTTP_TEXT if "Url" not in field else "https://example.com/" + HTTP_TEXT
    created, seconds, _ = await post_while_polling_health(http, alice, CREATE, {"input": {**VALID, field: value}})
    character = await create_character(graphql, alice)
    updated, _, _ = await post_while_polling_health(
        http, alice, UPDATE, {"id": character["id"], "input": {field: value}}
    )
    print(f"1 MB {field} refused in {seconds * 1000:.1f} ms")
    assert_bad_input(created, field)
    assert_bad_input(updated, field)


async def test_a_megabyte_tag_and_rules_are_refused(http: httpx.AsyncClient, alice: uuid.UUID) -> None:
    tag, _, _ = await post_while_polling_health(
        http, alice, CREATE, {"input": {**VALID, "appearanceTags": ["ok", HTTP_TEXT]}}
    )
    rules, seconds, _ = await post_while_polling_health(
        http, alice, CREATE, {"input": {**VALID, "sceneBehaviorRules": {"k": [HTTP_TEXT[:1000]] * 1000}}}
    )
    print(f"1 MB sceneBehaviorRules refused in {seconds * 1000:.1f} ms")
    assert_bad_input(tag, "appearanceTags")
    assert_bad_input(rules, "sceneBehaviorRules")


async def test_a_megabyte_prompt_and_draft_are_refused(http: httpx.AsyncClient, alice: uuid.UUID) -> None:
    prompt, _, _ = await post_while_polling_health(http, alice, GENERATE_IMAGE, {"input": {"prompt": HTTP_TEXT}})
    draft, _, _ = await post_while_polling_health(
        http, alice, GENERATE_PORTRAIT, {"input": {"draft": {**VALID, "persona": HTTP_TEXT}}}
    )
    tags, _, _ = await post_while_polling_health(
        http, alice, GENERATE_PORTRAIT,
        {"input": {"draft": {**VALID, "appearanceTags": [str(i) for i in range(31)]}}},  # 100,000: variable_bounds
    )
    assert_bad_input(prompt, "prompt")
    assert_bad_input(draft, "persona")
    assert_bad_input(tags, "appearanceTags")


async def test_long_ids_and_cursors_are_refused_before_they_are_parsed(
    http: httpx.AsyncClient, alice: uuid.UUID
) -> None:
    by_id, _, _ = await post_while_polling_health(
        http, alice, "query($id: ID!) { character(id: $id) { id } }", {"id": "0" * 1_000_000}
    )
    page, _, _ = await post_while_polling_health(
        http, alice, "query($after: String) { characters(after: $after) { edges { cursor } } }",
        {"after": "A" * 1_000_000},
    )
    assert_bad_input(by_id, "id")
    assert_bad_input(page, "after")


LONE_SURROGATE = "\ud800"
SURROGATE_INPUTS: dict[str, dict[str, Any]] = {
    "name": {"name": f"A{LONE_SURROGATE}"},
    "description": {"description": LONE_SURROGATE + "x"},
    "traits": {"traits": LONE_SURROGATE},
    "persona": {"persona": LONE_SURROGATE},
    "gender": {"gender": LONE_SURROGATE},
    "appearanceTags": {"appearanceTags": ["fine", f"bad {LONE_SURROGATE}"]},
    "sceneBehaviorRules": {"sceneBehaviorRules": {"voice": LONE_SURROGATE}},
    "imageUrl": {"imageUrl": f"https://example.com/{LONE_SURROGATE}.png"},
    "referenceImageUrl": {"referenceImageUrl": f"{uuid.UUID(int=0)}/{LONE_SURROGATE}.png"},
}


@pytest.mark.parametrize("field", list(SURROGATE_INPUTS))
async def test_a_lone_surrogate_in_any_character_text_is_refused_with_the_request(
    http: httpx.AsyncClient, graphql: GraphQL, alice: uuid.UUID, field: str
) -> None:
    # given input whose JSON carries a lone surrogate escape (valid JSON, not valid Unicode)
    overrides = SURROGATE_INPUTS[field]
    # when it is sent to create and to update a character
    created, _, _ = await post_while_polling_health(
        http, alice, CREATE, {"input": {**VALID, **overrides}}, status=400
    )
    character = await create_character(graphql, alice)
    updated, _, _ = await post_while_polling_health(
        http, alice, UPDATE, {"id": character["id"], "input": overrides}, status=400
    )
    # then the request is refused as invalid JSON before GraphQL runs, never an error from the database driver
    assert_invalid_json(created)
    assert_invalid_json(updated)


async def test_a_lone_surrogate_in_a_rules_key_prompt_id_or_cursor_is_refused_with_the_request(
    http: httpx.AsyncClient, alice: uuid.UUID
) -> None:
    requests: list[tuple[str, dict[str, Any]]] = [
        (CREATE, {"input": {**VALID, "sceneBehaviorRules": {LONE_SURROGATE: 1}}}),
        (GENERATE_IMAGE, {"input": {"prompt": f"a cat {LONE_SURROGATE}"}}),
        (GENERATE_PORTRAIT, {"input": {"draft": {**VALID, "name": LONE_SURROGATE}}}),
        ("query($id: ID!) { character(id: $id) { id } }", {"id": LONE_SURROGATE}),
        ("query($after: String) { jobs(after: $after) { edges { cursor } } }", {"after": LONE_SURROGATE}),
    ]
    for query, variables in requests:
        body, _, _ = await post_while_polling_health(http, alice, query, variables, status=400)
        assert_invalid_json(body)


@pytest.mark.parametrize("field", ["name", "description", "traits", "persona", "gender"])
def test_the_character_checks_refuse_a_lone_surrogate_themselves(field: str) -> None:
    # given a text with a lone surrogate reaching the checks by another way than HTTP's JSON
    # when it is checked, then it is refused naming the field (PostgreSQL could not store it)
    with pytest.raises(BadUserInput) as refused:
        clean_character_fields({**VALID, field: f"a {LONE_SURROGATE} b"}, partial=False, owner_id=uuid.UUID(int=1))
    assert refused.value.extensions == {"code": "BAD_USER_INPUT", "field": field}


@pytest.mark.parametrize(
    "fields,field",
    [
        ({"name": HUGE_TEXT}, "name"),
        ({"description": " " + HUGE_TEXT + " "}, "description"),
        ({"traits": HUGE_TEXT}, "traits"),
        ({"persona": HUGE_TEXT}, "persona"),
        ({"gender": HUGE_TEXT}, "gender"),
        ({"appearance_tags": [HUGE_TEXT]}, "appearance_tags"),
        ({"image_url": "https://example.com/" + HUGE_TEXT}, "image_url"),
        ({"reference_image_url": HUGE_TEXT}, "reference_image_url"),
        ({"scene_behavior_rules": {"k": HUGE_TEXT}}, "scene_behavior_rules"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_ten_megabyte_texts_are_refused_by_the_character_checks(fields: dict[str, Any], field: str) -> None:
    started = time.perf_counter()
    with pytest.raises(BadUserInput) as refused:
        clean_character_fields({**VALID, **fields}, partial=False, owner_id=uuid.UUID(int=1))
    print(f"10 MB {field} refused in {(time.perf_counter() - started) * 1000:.1f} ms")
    assert refused.value.extensions == {"code": "BAD_USER_INPUT", "field": field}


def test_tags_are_deduplicated_in_order_within_the_count() -> None:
    assert clean_tags([" a ", "b", "a", "c", "b"], field="t", max_count=5, max_length=10) == ["a", "b", "c"]
    with pytest.raises(BadUserInput, match="at most 5 tags"):
        clean_tags(["a"] * 6, field="t", max_count=5, max_length=10)


def test_deeply_nested_rules_are_refused_without_recursion() -> None:
    # given JSON nested far past the bound (and past Python's recursion limit)
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    # when it is checked, then it is refused as too deep (not a RecursionError)
    with pytest.raises(BadUserInput) as refused:
        clean_json_object({"a": deep}, field="rules", max_bytes=16384, max_depth=10)
    assert "nests deeper than 10 levels" in refused.value.message
    # and nesting just past the bound, small enough to encode, is refused by the walk
    shallow: Any = 1
    for _ in range(11):
        shallow = {"a": shallow}
    with pytest.raises(BadUserInput, match="nests deeper than 10 levels"):
        clean_json_object(shallow, field="rules", max_bytes=16384, max_depth=10)
