"""Reference-image consistency through the API: a character's reference image reaches the model, with its seed.

Real PostgreSQL, real workers (tests/conftest.py: start_generation), the local renderer checked by its pixels,
and the fake fal server over real HTTP for a remote model, which receives a short-lived signed URL.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import jwt
import pytest
from PIL import Image

from pipeline.providers.local import INSET_FRAME_COLOR, inset_box, inset_frame
from storage.objects.paths import Bucket, parse_key
from storage.objects.store import ObjectStore
from tests.conftest import StartGeneration
from tests.fake_fal import FakeFal
from tests.generation_support import FAL_MODEL, GraphQL, create_character, wait_for_job
from tests.support import only_error
from tests.test_local_reference import BLUE, GOLD, GREEN, RED, close, reference_png

Fetch = Callable[..., Awaitable[httpx.Response]]

REDUX_MODEL = "fal-ai/flux-pro/v1.1/redux"
JOB_FIELDS = """id status seed error referenceImagePath referenceLibraryAssetId referenceSeed modelKey characterId
    workspaceAsset { id signedUrl { url } } libraryAsset { id roleplayMetadata }"""
GENERATE_IMAGE = f"mutation($input: GenerateImageInput!) {{ generateImage(input: $input) {{ {JOB_FIELDS} }} }}"
GENERATE_PORTRAIT = (
    "mutation($input: GenerateCharacterPortraitInput!) "
    f"{{ generateCharacterPortrait(input: $input) {{ {JOB_FIELDS} }} }}"
)
JOB = f"query($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}"
SAVE = "mutation($id: ID!) { saveToLibrary(workspaceAssetId: $id) { id path seed } }"
SET_REFERENCE = """
mutation($character: ID!, $asset: ID!) {
  setReferenceImage(characterId: $character, libraryAssetId: $asset) { id imageUrl referenceImageUrl seedLocked }
}
"""
MODELS = """{ imageModels { id modelKey provider supportsReference requiresReference supportsSeed
    sizes { width height } maxSide typicalLatencySeconds } }"""


async def finished(graphql: GraphQL, user: uuid.UUID, job_id: str) -> dict[str, Any]:
    """The job once it has ended, with this file's fields (the reference ones included)."""
    await wait_for_job(graphql, user, job_id)
    body = await graphql(JOB, {"id": job_id}, user=user)
    job: dict[str, Any] = body["data"]["job"]
    return job


async def model_id(graphql: GraphQL, model_key: str) -> str:
    body = await graphql(MODELS)
    assert "errors" not in body, body
    models = body["data"]["imageModels"]
    (found,) = [model["id"] for model in models if model["modelKey"] == model_key]
    return str(found)


async def library_image(graphql: GraphQL, user: uuid.UUID, local_store: ObjectStore) -> dict[str, Any]:
    """One of ``user``'s library images whose bytes are the four-colour reference: generated, saved, then its
    object's bytes replaced (so the pixels the renderer takes in are known)."""
    body = await graphql(GENERATE_IMAGE, {"input": {"prompt": "a sigil", "seed": 11}}, user=user)
    assert "errors" not in body, body
    done = await wait_for_job(graphql, user, body["data"]["generateImage"]["id"], status="COMPLETED")
    saved = await graphql(SAVE, {"id": done["workspaceAsset"]["id"]}, user=user)
    assert "errors" not in saved, saved
    asset: dict[str, Any] = saved["data"]["saveToLibrary"]
    key = parse_key(asset["path"])
    await local_store.put(key.bucket, key.path, reference_png())
    return asset


async def character_with_reference(
    graphql: GraphQL, user: uuid.UUID, local_store: ObjectStore
) -> tuple[dict[str, Any], dict[str, Any]]:
    character = await create_character(graphql, user, name="Seraphine Vale")
    asset = await library_image(graphql, user, local_store)
    body = await graphql(SET_REFERENCE, {"character": character["id"], "asset": asset["id"]}, user=user)
    assert "errors" not in body, body
    return body["data"]["setReferenceImage"], asset


def rgb(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def assert_reference_visible(image: Image.Image) -> None:
    """The renderer's marks of the four-colour reference: its most common colour at the top, the framed inset."""
    assert image.getpixel((1, 1)) == RED
    left, top, right, _ = inset_box(image.width, image.height)
    frame = inset_frame(image.width, image.height)
    assert image.getpixel((left, top)) == INSET_FRAME_COLOR
    x0, y0, side = left + frame, top + frame, right - left - 2 * frame
    assert close(image.getpixel((x0 + side // 4, y0 + side // 2)), RED)
    assert close(image.getpixel((x0 + 3 * side // 4, y0 + side // 4)), GREEN)
    assert close(image.getpixel((x0 + 5 * side // 8, y0 + 7 * side // 8)), BLUE)
    assert close(image.getpixel((x0 + 7 * side // 8, y0 + 7 * side // 8)), GOLD)


async def test_set_reference_image_stores_the_assets_path_and_locks_its_seed(
    graphql: GraphQL, start_generation: StartGeneration, alice: uuid.UUID, local_store: ObjectStore
) -> None:
    """Given alice's character and one of her library images, when she makes it the reference, then the character
    keeps the asset's own path (user-library/...) and its seed; its shown image is untouched."""
    await start_generation()
    character = await create_character(graphql, alice)
    asset = await library_image(graphql, alice, local_store)
    # when
    body = await graphql(SET_REFERENCE, {"character": character["id"], "asset": asset["id"]}, user=alice)
    # then
    updated = body["data"]["setReferenceImage"]
    assert updated["referenceImageUrl"] == asset["path"] and asset["path"].startswith(f"user-library/{alice}/")
    assert updated["seedLocked"] == asset["seed"] == 11
    assert updated["imageUrl"] is None


async def test_a_scene_with_a_character_is_rendered_from_its_reference_and_locked_seed(
    graphql: GraphQL, start_generation: StartGeneration, alice: uuid.UUID, local_store: ObjectStore, fetch: Fetch
) -> None:
    """Given a character whose reference is the four-colour image (seed 11 locked), when alice generates a scene
    with it on the local renderer, then the job records the reference path, asset and seed, the image shows the
    reference (its colours and the framed inset), and the character's own image is unchanged."""
    await start_generation()
    character, asset = await character_with_reference(graphql, alice, local_store)
    # when
    body = await graphql(
        GENERATE_IMAGE, {"input": {"prompt": "a duel at dawn", "characterId": character["id"]}}, user=alice
    )
    # then the job says what it was given
    job = body["data"]["generateImage"]
    assert job["referenceImagePath"] == asset["path"]
    assert job["referenceLibraryAssetId"] == asset["id"]
    assert job["referenceSeed"] == 11 and job["seed"] == 11
    assert job["characterId"] is None  # a scene, not the character's portrait
    done = await finished(graphql, alice, job["id"])
    assert done["status"] == "COMPLETED", done
    assert done["referenceImagePath"] == asset["path"]
    # and the image visibly uses the reference
    image = await fetch(done["workspaceAsset"]["signedUrl"]["url"])
    assert image.status_code == 200
    assert_reference_visible(rgb(image.content))
    # and the character still shows what it showed
    after = await graphql(
        "query($id: ID!) { character(id: $id) { imageUrl referenceImageUrl } }", {"id": character["id"]}, user=alice
    )
    assert after["data"]["character"] == {"imageUrl": None, "referenceImageUrl": asset["path"]}


async def test_a_portrait_with_use_reference_is_rendered_from_it_and_saved_as_reference_consistent(
    graphql: GraphQL, start_generation: StartGeneration, alice: uuid.UUID, local_store: ObjectStore, fetch: Fetch
) -> None:
    """Given a character with a reference, when alice asks for a portrait with useReference, then it is made from
    the reference and its seed, auto-saved with consistency_method reference_image, and becomes the new reference."""
    await start_generation()
    character, asset = await character_with_reference(graphql, alice, local_store)
    # when
    body = await graphql(
        GENERATE_PORTRAIT, {"input": {"characterId": character["id"], "useReference": True}}, user=alice
    )
    job = body["data"]["generateCharacterPortrait"]
    done = await finished(graphql, alice, job["id"])
    # then
    assert done["status"] == "COMPLETED", done
    assert (done["referenceImagePath"], done["referenceSeed"], done["seed"]) == (asset["path"], 11, 11)
    assert done["libraryAsset"]["roleplayMetadata"]["consistency_method"] == "reference_image"
    image = await fetch(done["workspaceAsset"]["signedUrl"]["url"])
    assert_reference_visible(rgb(image.content))
    after = await graphql(
        "query($id: ID!) { character(id: $id) { imageUrl referenceImageUrl seedLocked } }",
        {"id": character["id"]}, user=alice,
    )
    shown = after["data"]["character"]
    assert shown["imageUrl"] == shown["referenceImageUrl"] != asset["path"]
    assert shown["seedLocked"] == 11


async def test_a_remote_model_gets_a_short_lived_signed_url_of_the_reference(
    graphql: GraphQL,
    start_generation: StartGeneration,
    alice: uuid.UUID,
    local_store: ObjectStore,
    fetch: Fetch,
    fake_fal_server: FakeFal,
) -> None:
    """Given a character with a reference, when a scene is generated on fal's Redux model (the fake fal server),
    then fal's submit carries image_url: a signed URL of the reference object that lives 15 minutes (the
    default), and that URL serves the reference's bytes; prompt and locked seed travel with it."""
    await start_generation()
    character, asset = await character_with_reference(graphql, alice, local_store)
    redux = await model_id(graphql, REDUX_MODEL)
    # when
    before = int(time.time())
    body = await graphql(
        GENERATE_IMAGE,
        {"input": {"prompt": "a duel at dawn", "characterId": character["id"], "modelId": redux}},
        user=alice,
    )
    done = await finished(graphql, alice, body["data"]["generateImage"]["id"])
    after = int(time.time())
    # then
    assert done["status"] == "COMPLETED", done
    (submit,) = fake_fal_server.submits
    assert submit["prompt"] == "a duel at dawn" and submit["seed"] == 11
    url = urlsplit(submit["image_url"])
    key = parse_key(asset["path"])
    assert key.bucket is Bucket.USER_LIBRARY
    assert url.path == f"/storage/v1/object/sign/{asset['path']}"
    [token] = parse_qs(url.query)["token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["url"] == asset["path"]
    assert claims["exp"] - claims["iat"] == 900
    assert before <= claims["iat"] <= after
    served = await fetch(submit["image_url"])
    assert served.status_code == 200 and served.content == reference_png()


async def test_a_model_that_cannot_take_a_reference_is_bad_user_input_naming_it(
    graphql: GraphQL, start_generation: StartGeneration, alice: uuid.UUID, local_store: ObjectStore,
    pool: asyncpg.Pool,
) -> None:
    """Given a character with a reference, when a scene or a useReference portrait is asked of Seedream (text to
    image only), then BAD_USER_INPUT names the model, and no job is queued."""
    await start_generation()
    character, _ = await character_with_reference(graphql, alice, local_store)
    seedream = await model_id(graphql, FAL_MODEL)
    async with pool.acquire() as connection:
        jobs_before = await connection.fetchval("SELECT count(*) FROM jobs")
    # when
    scene = await graphql(
        GENERATE_IMAGE, {"input": {"prompt": "a duel", "characterId": character["id"], "modelId": seedream}},
        user=alice,
    )
    portrait = await graphql(
        GENERATE_PORTRAIT,
        {"input": {"characterId": character["id"], "useReference": True, "modelId": seedream}},
        user=alice,
    )
    # then
    for body in (scene, portrait):
        error = only_error(body)
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "modelId"}
        assert "Seedream 4.0 (fal.ai)" in error["message"] and "cannot take a reference image" in error["message"]
    async with pool.acquire() as connection:
        assert await connection.fetchval("SELECT count(*) FROM jobs") == jobs_before


async def test_asking_for_a_reference_that_is_not_there_is_bad_user_input(
    graphql: GraphQL, alice: uuid.UUID
) -> None:
    """Given a character without a reference, one whose reference is an external URL, and a draft, when each is
    asked to use a reference, or Redux (which needs one) is asked without one, then each is BAD_USER_INPUT."""
    plain = await create_character(graphql, alice, name="Plain Jane")
    external = await create_character(
        graphql, alice, name="Far Away", referenceImageUrl="https://images.example.com/far.png"
    )
    redux = await model_id(graphql, REDUX_MODEL)
    # when
    cases = {
        "no reference": await graphql(
            GENERATE_IMAGE, {"input": {"prompt": "a duel", "characterId": plain["id"]}}, user=alice
        ),
        "no reference, portrait": await graphql(
            GENERATE_PORTRAIT, {"input": {"characterId": plain["id"], "useReference": True}}, user=alice
        ),
        "external": await graphql(
            GENERATE_IMAGE, {"input": {"prompt": "a duel", "characterId": external["id"]}}, user=alice
        ),
        "draft": await graphql(
            GENERATE_PORTRAIT,
            {"input": {"draft": {"name": "D", "description": "D"}, "useReference": True}}, user=alice,
        ),
        "redux without": await graphql(
            GENERATE_IMAGE, {"input": {"prompt": "a duel", "modelId": redux}}, user=alice
        ),
    }
    # then
    errors = {name: only_error(body) for name, body in cases.items()}
    assert {name: error["extensions"]["code"] for name, error in errors.items()} == dict.fromkeys(
        cases, "BAD_USER_INPUT"
    )
    assert "Plain Jane has no reference image" in errors["no reference"]["message"]
    assert "Plain Jane has no reference image" in errors["no reference, portrait"]["message"]
    assert "external URL" in errors["external"]["message"]
    assert errors["draft"]["extensions"]["field"] == "useReference"
    assert "needs a reference image" in errors["redux without"]["message"]


async def test_a_stranger_can_neither_use_nor_set_anothers_reference(
    graphql: GraphQL, start_generation: StartGeneration, alice: uuid.UUID, bob: uuid.UUID,
    local_store: ObjectStore,
) -> None:
    """Given alice's character with a reference and bob's own character and library image, when bob points his
    character at alice's asset, alice's character at his asset, or makes a scene with alice's character, then each
    is NOT_FOUND exactly as for an id nobody has, and neither character changes."""
    await start_generation()
    alices, alices_asset = await character_with_reference(graphql, alice, local_store)
    bobs = await create_character(graphql, bob, name="Bob's knight")
    bobs_asset = await library_image(graphql, bob, local_store)
    nobody = str(uuid.uuid4())
    # when
    answers = {
        "alice's asset": await graphql(SET_REFERENCE, {"character": bobs["id"], "asset": alices_asset["id"]}, user=bob),
        "missing asset": await graphql(SET_REFERENCE, {"character": bobs["id"], "asset": nobody}, user=bob),
        "alice's character": await graphql(
            SET_REFERENCE, {"character": alices["id"], "asset": bobs_asset["id"]}, user=bob
        ),
        "missing character": await graphql(SET_REFERENCE, {"character": nobody, "asset": bobs_asset["id"]}, user=bob),
        "scene with alice's": await graphql(
            GENERATE_IMAGE, {"input": {"prompt": "a duel", "characterId": alices["id"]}}, user=bob
        ),
        "scene with missing": await graphql(
            GENERATE_IMAGE, {"input": {"prompt": "a duel", "characterId": nobody}}, user=bob
        ),
    }
    # then
    assert answers["alice's asset"] == answers["missing asset"]
    assert answers["alice's character"] == answers["missing character"]
    assert answers["scene with alice's"] == answers["scene with missing"]
    assert only_error(answers["alice's asset"])["extensions"] == {"code": "NOT_FOUND", "field": "libraryAssetId"}
    assert only_error(answers["alice's character"])["extensions"] == {"code": "NOT_FOUND", "field": "characterId"}
    assert only_error(answers["scene with alice's"])["extensions"]["code"] == "NOT_FOUND"
    query = "query($id: ID!) { character(id: $id) { referenceImageUrl seedLocked } }"
    assert (await graphql(query, {"id": bobs["id"]}, user=bob))["data"]["character"] == {
        "referenceImageUrl": None, "seedLocked": None,
    }
    assert (await graphql(query, {"id": alices["id"]}, user=alice))["data"]["character"] == {
        "referenceImageUrl": alices_asset["path"], "seedLocked": 11,
    }


async def test_a_reference_deleted_after_queueing_fails_the_job_without_retry(
    graphql: GraphQL, start_generation: StartGeneration, alice: uuid.UUID, local_store: ObjectStore
) -> None:
    """Given a scene queued with a reference (no worker yet), when the reference object disappears and a worker
    then runs the job, then it FAILED at once, saying the reference is no longer stored."""
    generation = await start_generation()
    character, asset = await character_with_reference(graphql, alice, local_store)
    await generation.stop()
    body = await graphql(GENERATE_IMAGE, {"input": {"prompt": "a duel", "characterId": character["id"]}}, user=alice)
    key = parse_key(asset["path"])
    await local_store.delete(key.bucket, key.path)
    # when
    await start_generation()
    done = await finished(graphql, alice, body["data"]["generateImage"]["id"])
    # then
    assert done["status"] == "FAILED"
    assert "is no longer stored" in done["error"]


async def test_every_model_tells_a_picker_what_it_supports(graphql: GraphQL, pool: asyncpg.Pool) -> None:
    """Given the catalogue, when imageModels is read, then every model has its picker data (reference, seeds,
    sizes, latency, provider), matching what the rows say, and the known models say what they take."""
    # when
    body = await graphql(MODELS)
    assert "errors" not in body, body
    models = {model["modelKey"]: model for model in body["data"]["imageModels"]}
    # then every model has positive sizes and latency
    for model in models.values():
        assert model["sizes"] and all(size["width"] > 0 and size["height"] > 0 for size in model["sizes"])
        assert model["typicalLatencySeconds"] > 0
        assert model["maxSide"] is None or model["maxSide"] > 0
        assert not model["requiresReference"] or model["supportsReference"]
    local = models["local/portrait-v1"]
    assert (local["provider"], local["supportsReference"], local["supportsSeed"], local["maxSide"]) == (
        "LOCAL", True, True, 4096,
    )
    assert local["sizes"][0] == {"width": 1024, "height": 1024}
    assert (models[FAL_MODEL]["supportsReference"], models[FAL_MODEL]["supportsSeed"]) == (False, True)
    assert (models[REDUX_MODEL]["supportsReference"], models[REDUX_MODEL]["requiresReference"]) == (True, True)
    # and the table refuses a size that is not WIDTHxHEIGHT
    async with pool.acquire() as connection:
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute("UPDATE image_models SET sizes = '{big}' WHERE model_key = $1", FAL_MODEL)
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute("UPDATE image_models SET sizes = '{}' WHERE model_key = $1", FAL_MODEL)
