"""The generation API through GraphQL on the local object store: drafts, errors, caps, queries, library, sweeper."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from pipeline.sweeper import sweep
from server.settings import Settings
from storage.objects.catalog import CatalogedObjectStore
from storage.objects.paths import parse_key
from storage.objects.store import ObjectNotFound, ObjectStore
from tests.generation_support import (
    CANCEL,
    CREATE_CHARACTER,
    GENERATE_IMAGE,
    GENERATE_PORTRAIT,
    JOB,
    GraphQL,
    create_character,
    generate_portrait,
    get_character,
    get_job,
    wait_for_job,
)
from tests.support import TEST_JWT_SECRET, error_codes, only_error

StartGeneration = Callable[..., Awaitable[Any]]
Fetch = Callable[..., Awaitable[httpx.Response]]

DRAFT = {
    "name": "Seraphine Vale",
    "description": "A wandering alchemist with silver hair.",
    "appearanceTags": ["silver hair", "green eyes"],
    "traits": "curious",
    "gender": "female",
}
JOBS = """
query($first: Int, $after: String, $status: JobStatus) {
  jobs(first: $first, after: $after, status: $status) {
    edges { cursor node { id status } } pageInfo { hasNextPage endCursor }
  }
}
"""
WORKSPACE = "query { workspaceAssets(first: 50) { edges { node { id path jobId } } } }"
LIBRARY = "query { libraryAssets(first: 50) { edges { node { id path sourceJobId } } } }"
SAVE = """
mutation($id: ID!) {
  saveToLibrary(workspaceAssetId: $id) {
    id path thumbnailPath tags roleplayMetadata contentCategory sourceJobId mimeType
    signedUrl { url } signedThumbnailUrl { url }
  }
}
"""
DELETE_LIBRARY_ASSET = "mutation($id: ID!) { deleteLibraryAsset(id: $id) }"
UPDATE_CHARACTER = (
    "mutation($id: ID!, $input: UpdateCharacterInput!) { updateCharacter(id: $id, input: $input) { id imageUrl } }"
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- helpers -------------------------------------------------------------------------


async def count(pool: asyncpg.Pool, table: str, where: str = "true", *args: Any) -> int:
    value: int = await pool.fetchval(f"SELECT count(*) FROM {table} WHERE {where}", *args)
    return value


async def generate_image(
    graphql: GraphQL, user: uuid.UUID, prompt: str = "a lighthouse at dusk", **fields: Any
) -> dict[str, Any]:
    body = await graphql(GENERATE_IMAGE, {"input": {"prompt": prompt, **fields}}, user=user)
    assert "errors" not in body, body
    job: dict[str, Any] = body["data"]["generateImage"]
    return job


def code_of(body: dict[str, Any]) -> str:
    code: str = only_error(body)["extensions"]["code"]
    return code


async def is_stored(pool: asyncpg.Pool, store: ObjectStore, key: str) -> tuple[bool, bool]:
    """(catalogued, in the store) for a ``bucket/path`` key."""
    catalogued = await count(pool, "stored_objects", "key = $1", key) == 1
    target = parse_key(key)
    try:
        await store.head(target.bucket, target.path)
    except ObjectNotFound:
        return catalogued, False
    return catalogued, True


# --- 1, 2: a draft portrait, then its character --------------------------------------


async def test_a_completed_draft_portrait_is_taken_by_the_new_character_and_saved_to_the_library(
    graphql: GraphQL, pool: asyncpg.Pool, start_generation: StartGeneration, alice: uuid.UUID
) -> None:
    # given a running worker and a draft portrait that completed before its character exists
    await start_generation("local")
    queued = await generate_portrait(graphql, alice, draft=DRAFT)
    assert queued["isDraft"] is True and queued["characterId"] is None
    assert queued["prompt"].startswith("Portrait of Seraphine Vale, female") and "silver hair" in queued["prompt"]
    draft = await wait_for_job(graphql, alice, queued["id"], status="COMPLETED")

    # then it is a draft with a workspace preview and nothing in the library
    assert draft["isDraft"] is True and draft["characterId"] is None and draft["error"] is None
    workspace = draft["workspaceAsset"]
    assert workspace is not None and workspace["path"].startswith(f"workspace-temp/{alice}/{queued['id']}_")
    assert draft["libraryAsset"] is None
    assert await count(pool, "user_library") == 0
    assert draft["seed"] is not None

    # when the character is created from it, under another name than the draft's
    body = await graphql(
        CREATE_CHARACTER,
        {"input": {"name": "Seraphine the Bold", "description": "An alchemist.", "portraitJobId": queued["id"]}},
        user=alice,
    )

    # then the character shows the workspace preview at once, its seed locked
    assert "errors" not in body, body
    character = body["data"]["createCharacter"]
    assert character["imageUrl"] == character["referenceImageUrl"] == workspace["path"]
    assert character["seedLocked"] == draft["seed"]
    assert character["signedImageUrl"] is not None

    # and the job goes through the queue again and completes with the library save
    done = await wait_for_job(graphql, alice, queued["id"], status="COMPLETED")
    assert done["characterId"] == character["id"] and done["error"] is None
    library = done["libraryAsset"]
    assert library is not None
    expected_path = f"user-library/{alice}/{queued['id']}_{character['id']}.png"
    assert library["path"] == expected_path
    assert library["roleplayMetadata"]["character_name"] == "Seraphine the Bold"
    assert library["roleplayMetadata"]["character_id"] == character["id"]
    assert library["seed"] == draft["seed"] == done["seed"]

    # and the character ends on the library copy, seed unchanged
    shown = await get_character(graphql, alice, character["id"])
    assert shown["imageUrl"] == shown["referenceImageUrl"] == expected_path
    assert shown["seedLocked"] == done["seed"]
    assert await count(pool, "user_library", "source_job_id = $1", uuid.UUID(queued["id"])) == 1
    assert await count(pool, "user_library") == 1


async def test_a_still_queued_draft_portrait_reaches_its_character_once_a_worker_runs(
    graphql: GraphQL, pool: asyncpg.Pool, start_generation: StartGeneration, alice: uuid.UUID
) -> None:
    # given a draft portrait queued while no worker runs
    queued = await generate_portrait(graphql, alice, draft=DRAFT, seed=77)
    assert queued["status"] == "QUEUED"

    # when the character is created from it
    character = await create_character(graphql, alice, name="Seraphine", portraitJobId=queued["id"])

    # then the character has no image yet, and the job is still queued, now for that character
    assert character["imageUrl"] is None and character["referenceImageUrl"] is None
    pending = await get_job(graphql, alice, queued["id"])
    assert pending["status"] == "QUEUED" and pending["characterId"] == character["id"]

    # when a worker starts
    await start_generation("local")

    # then the job completes and the character ends on its library path, seed locked
    done = await wait_for_job(graphql, alice, queued["id"], status="COMPLETED")
    expected_path = f"user-library/{alice}/{queued['id']}_{character['id']}.png"
    assert done["libraryAsset"] is not None and done["libraryAsset"]["path"] == expected_path
    assert done["libraryAsset"]["roleplayMetadata"]["character_name"] == "Seraphine"
    shown = await get_character(graphql, alice, character["id"])
    assert shown["imageUrl"] == shown["referenceImageUrl"] == expected_path
    assert shown["seedLocked"] == 77
    assert await count(pool, "user_library", "source_job_id = $1", uuid.UUID(queued["id"])) == 1


# --- 3: createCharacter(portraitJobId) errors -------------------------------------------


async def test_create_character_refuses_bad_portrait_jobs_and_creates_nothing(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    # given (no worker, so every job stays queued): bob's draft, alice's portrait of an existing
    # character, alice's draft already taken by a character, and alice's canceled draft
    bobs_draft = await generate_portrait(graphql, bob, draft=DRAFT)
    existing = await create_character(graphql, alice, name="Existing")
    not_a_draft = await generate_portrait(graphql, alice, characterId=existing["id"])
    taken = await generate_portrait(graphql, alice, draft=DRAFT)
    await create_character(graphql, alice, name="Taker", portraitJobId=taken["id"])
    canceled = await generate_portrait(graphql, alice, draft=DRAFT)
    cancel = await graphql(CANCEL, {"id": canceled["id"]}, user=alice)
    assert cancel["data"]["cancelJob"]["status"] == "CANCELED"
    fresh = await generate_portrait(graphql, alice, draft=DRAFT)
    characters_before = await count(pool, "characters")
    assert characters_before == 2

    cases = [
        ("another user's job", {"portraitJobId": bobs_draft["id"]}, "NOT_FOUND", "not found"),
        ("a job for an existing character", {"portraitJobId": not_a_draft["id"]}, "BAD_USER_INPUT", "not a draft"),
        ("a draft already attached", {"portraitJobId": taken["id"]}, "BAD_USER_INPUT", "already belongs"),
        ("a canceled draft", {"portraitJobId": canceled["id"]}, "BAD_USER_INPUT", "canceled"),
        (
            "a job and an image URL", {"portraitJobId": fresh["id"], "imageUrl": "https://example.com/a.png"},
            "BAD_USER_INPUT", "not both",
        ),
        ("a malformed id", {"portraitJobId": "not-a-uuid"}, "BAD_USER_INPUT", "not a valid id"),
        ("a missing job", {"portraitJobId": str(uuid.uuid4())}, "NOT_FOUND", "not found"),
    ]
    for label, extra, expected, words in cases:
        # when alice creates a character with that job
        body = await graphql(
            CREATE_CHARACTER, {"input": {"name": "Nobody", "description": "d", **extra}}, user=alice
        )

        # then she gets the error, and no character is created
        assert code_of(body) == expected, (label, body)
        assert words in only_error(body)["message"], (label, body)
        assert body["data"]["createCharacter"] is None, label
        assert await count(pool, "characters") == characters_before, label

    # and none of the jobs changed hands: bob's draft and the fresh one are still unattached
    assert (await get_job(graphql, bob, bobs_draft["id"]))["characterId"] is None
    assert (await get_job(graphql, alice, fresh["id"]))["characterId"] is None
    assert await count(pool, "characters", "name = 'Nobody'") == 0


# --- 4: generate input errors --------------------------------------------------------------


async def test_generation_input_errors_queue_nothing(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    # given a character of alice's and one of bob's
    mine = await create_character(graphql, alice)
    bobs = await create_character(graphql, bob)
    long_prompt = "x" * 2001

    portrait, image = GENERATE_PORTRAIT, GENERATE_IMAGE
    char = {"characterId": mine["id"]}
    cases: list[tuple[str, str, dict[str, Any], uuid.UUID | None, str, str]] = [
        (
            "characterId and draft",
            portrait,
            {**char, "draft": DRAFT},
            alice,
            "BAD_USER_INPUT",
            "either characterId or draft",
        ),
        ("neither", portrait, {}, alice, "BAD_USER_INPUT", "either characterId or draft"),
        (
            "negative seed",
            portrait,
            {**char, "seed": -1},
            alice,
            "BAD_USER_INPUT",
            "seed must be between 0 and 2147483647",
        ),
        # beyond a GraphQL Int: refused by variable coercion, with the same code
        ("seed 2**31", portrait, {**char, "seed": 2**31}, alice, "BAD_USER_INPUT", "32-bit"),
        (
            "unknown model",
            portrait,
            {**char, "modelId": str(uuid.uuid4())},
            alice,
            "BAD_USER_INPUT",
            "no such image model",
        ),
        ("malformed model id", portrait, {**char, "modelId": "nope"}, alice, "BAD_USER_INPUT", "not a valid id"),
        ("another user's character", portrait, {"characterId": bobs["id"]}, alice, "NOT_FOUND", "Character not found"),
        ("no token", portrait, char, None, "UNAUTHENTICATED", "Authentication required"),
        (
            "a draft without a name",
            portrait,
            {"draft": {**DRAFT, "name": "  "}},
            alice,
            "BAD_USER_INPUT",
            "name must not be blank",
        ),
        (
            "prompt of 2001 characters",
            image,
            {"prompt": long_prompt},
            alice,
            "BAD_USER_INPUT",
            "at most 2000 characters",
        ),
        ("blank prompt", image, {"prompt": "   "}, alice, "BAD_USER_INPUT", "prompt must not be blank"),
        ("image seed 2**31", image, {"prompt": "a cat", "seed": 2**31}, alice, "BAD_USER_INPUT", "32-bit"),
        ("image without a token", image, {"prompt": "a cat"}, None, "UNAUTHENTICATED", "Authentication required"),
    ]
    for label, document, fields, user, expected, words in cases:
        # when the mutation is sent
        body = await graphql(document, {"input": fields}, user=user)

        # then it is refused with the expected code and reason, and no job is inserted
        assert code_of(body) == expected, (label, body)
        assert words in only_error(body)["message"], (label, body)
        assert all(value is None for value in (body.get("data") or {}).values()), label
        assert await count(pool, "jobs") == 0, label

    # and the bounds themselves are accepted: seed 2**31 - 1 and a prompt of 2000 characters
    await generate_portrait(graphql, alice, characterId=mine["id"], seed=2**31 - 1)
    await generate_image(graphql, alice, "y" * 2000, seed=0)
    assert await count(pool, "jobs") == 2


# --- 5: the per-user cap -------------------------------------------------------------------


async def test_the_eleventh_active_job_is_rate_limited_until_one_is_canceled(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    # given ten queued jobs of alice's (no worker runs)
    first_ten = [await generate_image(graphql, alice, f"image {index}") for index in range(10)]
    assert all(job["status"] == "QUEUED" for job in first_ten)

    # when she asks for an eleventh (a portrait counts the same)
    body = await graphql(GENERATE_PORTRAIT, {"input": {"draft": DRAFT}}, user=alice)

    # then it is rate limited, saying the limit, and not queued
    error = only_error(body)
    assert error["extensions"]["code"] == "RATE_LIMITED" and error["extensions"]["limit"] == 10
    assert "at most 10" in error["message"]
    assert await count(pool, "jobs", "user_id = $1", alice) == 10

    # and bob is not affected
    await generate_image(graphql, bob)

    # when alice cancels one, she can queue again, and then she is at the cap again
    canceled = await graphql(CANCEL, {"id": first_ten[3]["id"]}, user=alice)
    assert canceled["data"]["cancelJob"]["status"] == "CANCELED"
    await generate_image(graphql, alice, "after the cancel")
    again = await graphql(GENERATE_IMAGE, {"input": {"prompt": "one too many"}}, user=alice)
    assert code_of(again) == "RATE_LIMITED"
    assert await count(pool, "jobs", "user_id = $1 AND status = 'queued'", alice) == 10


async def test_concurrent_requests_never_pass_the_cap(graphql: GraphQL, pool: asyncpg.Pool) -> None:
    # given a fresh user with no jobs
    user = uuid.uuid4()

    # when 15 generateImage mutations arrive at once
    bodies = await asyncio.gather(
        *(graphql(GENERATE_IMAGE, {"input": {"prompt": f"burst {index}"}}, user=user) for index in range(15))
    )

    # then exactly 10 are queued and 5 are rate limited
    succeeded = [body for body in bodies if "errors" not in body]
    limited = [body for body in bodies if error_codes(body) == ["RATE_LIMITED"]]
    assert (len(succeeded), len(limited)) == (10, 5), bodies
    assert await count(pool, "jobs", "user_id = $1", user) == 10
    assert {body["data"]["generateImage"]["id"] for body in succeeded} == {
        str(row["id"]) for row in await pool.fetch("SELECT id FROM jobs WHERE user_id = $1", user)
    }


# --- 6: queries -------------------------------------------------------------------------------


async def test_jobs_are_the_viewers_own_filtered_by_status_and_paginated(
    graphql: GraphQL, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    # given three queued and one canceled job of alice's, and a queued one of bob's
    alices = [await generate_image(graphql, alice, f"alice {index}") for index in range(4)]
    await graphql(CANCEL, {"id": alices[0]["id"]}, user=alice)
    bobs = await generate_image(graphql, bob, "bob's")
    queued_ids = [job["id"] for job in reversed(alices[1:])]  # newest first

    # when alice reads bob's job
    body = await graphql(JOB, {"id": bobs["id"]}, user=alice)

    # then it is NOT_FOUND, as a missing one is
    assert code_of(body) == "NOT_FOUND" and body["data"]["job"] is None
    assert code_of(await graphql(JOB, {"id": str(uuid.uuid4())}, user=alice)) == "NOT_FOUND"

    # when alice lists her queued jobs two at a time
    first = (await graphql(JOBS, {"first": 2, "status": "QUEUED"}, user=alice))["data"]["jobs"]
    second = (
        await graphql(JOBS, {"first": 2, "after": first["pageInfo"]["endCursor"], "status": "QUEUED"}, user=alice)
    )["data"]["jobs"]

    # then she gets exactly her three queued jobs, newest first, over two pages
    assert first["pageInfo"]["hasNextPage"] is True and second["pageInfo"]["hasNextPage"] is False
    listed = [edge["node"] for edge in first["edges"] + second["edges"]]
    assert [job["id"] for job in listed] == queued_ids
    assert {job["status"] for job in listed} == {"QUEUED"}

    # and filtering by CANCELED, or not at all, keeps to her jobs too
    canceled = (await graphql(JOBS, {"status": "CANCELED"}, user=alice))["data"]["jobs"]["edges"]
    assert [edge["node"]["id"] for edge in canceled] == [alices[0]["id"]]
    everything = (await graphql(JOBS, {}, user=alice))["data"]["jobs"]["edges"]
    assert {edge["node"]["id"] for edge in everything} == {job["id"] for job in alices}
    bobs_list = (await graphql(JOBS, {}, user=bob))["data"]["jobs"]["edges"]
    assert [edge["node"]["id"] for edge in bobs_list] == [bobs["id"]]


async def test_workspace_and_library_lists_show_only_the_viewers_rows(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    # given workspace and library rows of both users (and an expired workspace row of alice's)
    for user in (alice, bob):
        await pool.execute(
            "INSERT INTO workspace_assets (user_id, temp_storage_path, mime_type, expires_at)"
            " VALUES ($1, $2, 'image/png', now() + interval '1 hour')",
            user, f"{user}/live.png",
        )
        await pool.execute(
            "INSERT INTO user_library (user_id, storage_path, mime_type) VALUES ($1, $2, 'image/png')",
            user, f"{user}/kept.png",
        )
    await pool.execute(
        "INSERT INTO workspace_assets (user_id, temp_storage_path, mime_type, expires_at)"
        " VALUES ($1, $2, 'image/png', now() - interval '1 minute')",
        alice, f"{alice}/expired.png",
    )

    for user in (alice, bob):
        # when each lists their workspace and library
        workspace = (await graphql(WORKSPACE, user=user))["data"]["workspaceAssets"]["edges"]
        library = (await graphql(LIBRARY, user=user))["data"]["libraryAssets"]["edges"]

        # then each sees only their own rows (and no expired workspace row)
        assert [edge["node"]["path"] for edge in workspace] == [f"workspace-temp/{user}/live.png"]
        assert [edge["node"]["path"] for edge in library] == [f"user-library/{user}/kept.png"]


# --- 7: saveToLibrary ----------------------------------------------------------------------


async def test_save_to_library_keeps_a_workspace_image_once(
    graphql: GraphQL,
    pool: asyncpg.Pool,
    start_generation: StartGeneration,
    fetch: Fetch,
    alice: uuid.UUID,
    bob: uuid.UUID,
) -> None:
    # given a completed workspace image
    await start_generation("local")
    queued = await generate_image(graphql, alice, "a lighthouse at dusk")
    done = await wait_for_job(graphql, alice, queued["id"], status="COMPLETED")
    assert done["destination"] == "WORKSPACE" and done["libraryAsset"] is None
    assert await count(pool, "user_library") == 0
    workspace_id = done["workspaceAsset"]["id"]

    # when bob tries to save it, he is told it does not exist, and nothing is saved
    refused = await graphql(SAVE, {"id": workspace_id}, user=bob)
    assert code_of(refused) == "NOT_FOUND"
    assert await count(pool, "user_library") == 0

    # when alice saves it
    body = await graphql(SAVE, {"id": workspace_id}, user=alice)

    # then it is a plain library image under the job's path, with a thumbnail
    assert "errors" not in body, body
    saved = body["data"]["saveToLibrary"]
    assert saved["path"] == f"user-library/{alice}/{queued['id']}.png"
    assert saved["thumbnailPath"] == f"user-library/{alice}/{queued['id']}.thumb.webp"
    assert saved["tags"] == [] and "type" not in saved["roleplayMetadata"] and saved["contentCategory"] is None
    assert saved["sourceJobId"] == queued["id"] and saved["mimeType"] == "image/png"

    # and its signed URL downloads a PNG, and its thumbnail downloads too
    image = await fetch(saved["signedUrl"]["url"])
    assert image.status_code == 200 and image.content.startswith(PNG_MAGIC)
    thumbnail = await fetch(saved["signedThumbnailUrl"]["url"])
    assert thumbnail.status_code == 200 and thumbnail.content[8:12] == b"WEBP"

    # and the job now shows its library copy
    assert (await get_job(graphql, alice, queued["id"]))["libraryAsset"]["id"] == saved["id"]

    # when she saves it again, she gets the same asset, and there is still one row
    again = await graphql(SAVE, {"id": workspace_id}, user=alice)
    assert again["data"]["saveToLibrary"]["id"] == saved["id"]
    assert await count(pool, "user_library") == 1

    # and a malformed or unknown id is refused
    assert code_of(await graphql(SAVE, {"id": "nope"}, user=alice)) == "BAD_USER_INPUT"
    assert code_of(await graphql(SAVE, {"id": str(uuid.uuid4())}, user=alice)) == "NOT_FOUND"


# --- 8: deleteLibraryAsset -------------------------------------------------------------------


async def test_deleting_a_library_portrait_removes_row_and_objects_and_the_character_falls_back(
    graphql: GraphQL,
    pool: asyncpg.Pool,
    start_generation: StartGeneration,
    local_store: ObjectStore,
    alice: uuid.UUID,
    bob: uuid.UUID,
) -> None:
    # given a character whose portrait went all the way to the library
    await start_generation("local")
    character = await create_character(graphql, alice)
    queued = await generate_portrait(graphql, alice, characterId=character["id"])
    done = await wait_for_job(graphql, alice, queued["id"], status="COMPLETED")
    library = done["libraryAsset"]
    keys = [library["path"], library["thumbnailPath"]]
    assert (await get_character(graphql, alice, character["id"]))["imageUrl"] == library["path"]
    for key in keys:
        assert await is_stored(pool, local_store, key) == (True, True)

    # when bob tries to delete it
    refused = await graphql(DELETE_LIBRARY_ASSET, {"id": library["id"]}, user=bob)

    # then it is NOT_FOUND and nothing is removed
    assert code_of(refused) == "NOT_FOUND"
    assert await count(pool, "user_library") == 1
    for key in keys:
        assert await is_stored(pool, local_store, key) == (True, True)
    assert (await get_character(graphql, alice, character["id"]))["imageUrl"] == library["path"]

    # when alice deletes it
    body = await graphql(DELETE_LIBRARY_ASSET, {"id": library["id"]}, user=alice)

    # then its row and both objects are gone, from the catalog and the store
    assert "errors" not in body, body
    assert body["data"]["deleteLibraryAsset"] == library["id"]
    assert await count(pool, "user_library") == 0
    for key in keys:
        assert await is_stored(pool, local_store, key) == (False, False)

    # and the character falls back to no image
    shown = await get_character(graphql, alice, character["id"])
    assert shown["imageUrl"] is None and shown["referenceImageUrl"] is None and shown["signedImageUrl"] is None

    # and deleting it again is NOT_FOUND
    assert code_of(await graphql(DELETE_LIBRARY_ASSET, {"id": library["id"]}, user=alice)) == "NOT_FOUND"


# --- 9: the sweeper ------------------------------------------------------------------------


async def two_expired_workspace_images(
    graphql: GraphQL, pool: asyncpg.Pool, start_generation: StartGeneration, user: uuid.UUID
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two completed workspace images of ``user``, both already expired."""
    await start_generation("local")
    queued = [await generate_image(graphql, user, f"image {index}") for index in range(2)]
    done = [await wait_for_job(graphql, user, job["id"], status="COMPLETED") for job in queued]
    await pool.execute("UPDATE workspace_assets SET expires_at = now() - interval '1 minute'")
    return done[0]["workspaceAsset"], done[1]["workspaceAsset"]


async def test_the_sweeper_deletes_expired_unused_images_and_keeps_the_ones_a_character_shows(
    graphql: GraphQL, pool: asyncpg.Pool, start_generation: StartGeneration, local_store: ObjectStore, alice: uuid.UUID
) -> None:
    # given two expired workspace images, one of them shown by a character
    used, unused = await two_expired_workspace_images(graphql, pool, start_generation, alice)
    character = await create_character(graphql, alice)
    updated = await graphql(UPDATE_CHARACTER, {"id": character["id"], "input": {"imageUrl": used["path"]}}, user=alice)
    assert updated["data"]["updateCharacter"]["imageUrl"] == used["path"]
    objects = CatalogedObjectStore(local_store, pool)

    # when the sweeper runs
    report = await sweep(pool, objects, recheck_seconds=3600)

    # then it deleted the unused one (row and both objects) and kept the used one
    assert (report.deleted_assets, report.deleted_objects, report.kept_in_use) == (1, 2, 1)
    assert await count(pool, "workspace_assets", "id = $1", uuid.UUID(unused["id"])) == 0
    for key in (unused["path"], unused["thumbnailPath"]):
        assert await is_stored(pool, local_store, key) == (False, False)
    assert await count(pool, "workspace_assets", "id = $1 AND expires_at > now()", uuid.UUID(used["id"])) == 1
    for key in (used["path"], used["thumbnailPath"]):
        assert await is_stored(pool, local_store, key) == (True, True)
    shown = await get_character(graphql, alice, character["id"])
    assert shown["imageUrl"] == used["path"] and shown["signedImageUrl"] is not None

    # and a second run finds nothing to do
    again = await sweep(pool, objects, recheck_seconds=3600)
    assert (again.deleted_assets, again.deleted_objects, again.kept_in_use) == (0, 0, 0)
    assert await count(pool, "workspace_assets") == 1


async def test_the_sweep_command_removes_expired_unused_images_and_says_how_many(
    graphql: GraphQL,
    pool: asyncpg.Pool,
    start_generation: StartGeneration,
    local_store: ObjectStore,
    settings: Settings,
    tmp_path: Path,
    alice: uuid.UUID,
) -> None:
    # given two expired workspace images, neither shown by a character
    first, second = await two_expired_workspace_images(graphql, pool, start_generation, alice)

    # when `portraits sweep` runs against the same database and object folder
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "JWT_SECRET": TEST_JWT_SECRET,
        "PORTRAITS_DATA_DIR": str(tmp_path),
        "OBJECTS_DIR": str(settings.objects.local_root),
    }
    for name in ("PORTRAITS_ENV", "OBJECT_STORE", "S3_ENDPOINT_URL"):
        env.pop(name, None)
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "server.cli", "sweep"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # then it exits cleanly, printing the count, and the rows and objects are gone
    assert out.returncode == 0, out.stderr
    assert "deleted 2 expired workspace asset(s) (4 objects); kept 0" in out.stdout
    assert await count(pool, "workspace_assets") == 0
    for asset in (first, second):
        for key in (asset["path"], asset["thumbnailPath"]):
            assert await is_stored(pool, local_store, key) == (False, False)


async def test_a_draft_whose_preview_was_swept_cannot_be_attached(
    graphql: GraphQL, pool: asyncpg.Pool, start_generation: StartGeneration, local_store: ObjectStore, alice: uuid.UUID
) -> None:
    # given a completed draft portrait whose workspace preview expired and was swept
    await start_generation("local")
    queued = await generate_portrait(graphql, alice, draft=DRAFT)
    await wait_for_job(graphql, alice, queued["id"], status="COMPLETED")
    await pool.execute("UPDATE workspace_assets SET expires_at = now() - interval '1 minute'")
    report = await sweep(pool, CatalogedObjectStore(local_store, pool), recheck_seconds=3600)
    assert report.deleted_assets == 1

    # when a character is created from it
    body = await graphql(
        CREATE_CHARACTER, {"input": {"name": "Late", "description": "d", "portraitJobId": queued["id"]}}, user=alice
    )

    # then it is refused as expired, no character is created, and the job stays an unattached draft
    assert code_of(body) == "BAD_USER_INPUT" and "expired" in only_error(body)["message"]
    assert await count(pool, "characters") == 0
    job = await get_job(graphql, alice, queued["id"])
    assert job["status"] == "COMPLETED" and job["characterId"] is None


async def test_an_unattached_draft_is_not_saved_by_hand(
    graphql: GraphQL, pool: asyncpg.Pool, start_generation: StartGeneration, alice: uuid.UUID
) -> None:
    # given a completed draft portrait, not yet attached to a character
    await start_generation("local")
    draft = await generate_portrait(graphql, alice, draft=DRAFT)
    done = await wait_for_job(graphql, alice, draft["id"], status="COMPLETED")

    # when it is saved by hand
    refused = await graphql(SAVE, {"id": done["workspaceAsset"]["id"]}, user=alice)

    # then it is refused (createCharacter saves it, under the character's name), and nothing is stored
    assert code_of(refused) == "BAD_USER_INPUT"
    assert "createCharacter" in only_error(refused)["message"]
    assert await count(pool, "user_library") == 0
    assert await pool.fetchval("SELECT count(*) FROM stored_objects WHERE key LIKE 'user-library/%'") == 0
