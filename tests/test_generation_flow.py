"""The whole portrait flow through GraphQL, on both object stores: generate, workspace, auto-save, library."""

from __future__ import annotations

import io
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from PIL import Image

from tests.conftest import graphql_over
from tests.generation_support import (
    GraphQL,
    create_character,
    generate_portrait,
    get_character,
    wait_for_job,
)

LIBRARY = """
query($tab: LibraryTab!) {
  libraryAssets(first: 10, tab: $tab) { edges { node { id path tags contentCategory roleplayMetadata width height
    seed sourceJobId signedUrl { url expiresAt } signedThumbnailUrl { url } } } }
}
"""
WORKSPACE = """
query { workspaceAssets(first: 10) { edges { node { id jobId path thumbnailPath width height mimeType seed
  signedUrl { url } signedThumbnailUrl { url } } } } }
"""


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def api(store: str, client: httpx.AsyncClient, s3_client: httpx.AsyncClient, pool: asyncpg.Pool) -> GraphQL:
    """GraphQL on the app whose objects live in ``store``."""
    return graphql_over(client if store == "local" else s3_client)


async def download_image(fetch: Callable[..., Awaitable[httpx.Response]], url: str) -> Image.Image:
    response = await fetch(url)
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


async def test_a_portrait_goes_from_queued_to_the_library_and_the_character_points_there(
    store: str,
    api: GraphQL,
    start_generation: Callable[..., Awaitable[Any]],
    fetch: Callable[..., Awaitable[httpx.Response]],
    alice: uuid.UUID,
) -> None:
    # given a character and a running worker
    character = await create_character(api, alice, appearanceTags=["silver hair"], traits="curious")
    await start_generation(store)

    # when a portrait is requested
    job = await generate_portrait(api, alice, characterId=character["id"], seed=1234)

    # then the job comes back at once, queued, with a prompt built from the character
    assert job["status"] in ("QUEUED", "PROCESSING")
    assert job["destination"] == "CHARACTER_PORTRAIT" and job["characterId"] == character["id"]
    assert job["prompt"].startswith("Portrait of Seraphine Vale") and "silver hair" in job["prompt"]
    assert job["modelKey"] == "local/portrait-v1"

    # and it completes, auto-saved to the library
    done = await wait_for_job(api, alice, job["id"], status="COMPLETED")
    assert done["attempts"] == 1 and done["error"] is None and done["seed"] == 1234
    workspace = done["workspaceAsset"]
    assert workspace["path"].startswith(f"workspace-temp/{alice}/{job['id']}_") and workspace["path"].endswith(".png")
    assert workspace["thumbnailPath"] == workspace["path"][: -len(".png")] + ".thumb.webp"
    assert (workspace["width"], workspace["height"], workspace["mimeType"]) == (1024, 1024, "image/png")
    library = done["libraryAsset"]
    assert library["path"] == f"user-library/{alice}/{job['id']}_{character['id']}.png"
    assert library["thumbnailPath"] == f"user-library/{alice}/{job['id']}_{character['id']}.thumb.webp"
    assert library["tags"] == ["character", "portrait"] and library["contentCategory"] == "character"
    assert library["roleplayMetadata"] == {
        "type": "character_portrait", "character_id": character["id"], "character_name": "Seraphine Vale",
        "consistency_method": "seed_locked",
    }
    assert (library["width"], library["height"], library["seed"]) == (1024, 1024, 1234)

    # and the character shows the stable library path, seed locked, signed for 24 h
    shown = await get_character(api, alice, character["id"])
    assert shown["imageUrl"] == shown["referenceImageUrl"] == library["path"]
    assert shown["seedLocked"] == 1234
    portrait = await download_image(fetch, shown["signedImageUrl"]["url"])
    assert portrait.format == "PNG" and portrait.size == (1024, 1024)
    thumbnail = await download_image(fetch, library["signedThumbnailUrl"]["url"])
    assert thumbnail.format == "WEBP" and max(thumbnail.size) == 256

    # and the workspace copy is listed and downloadable until it expires
    listed = (await api(WORKSPACE, user=alice))["data"]["workspaceAssets"]["edges"]
    assert [edge["node"]["jobId"] for edge in listed] == [job["id"]]
    workspace_image = await download_image(fetch, listed[0]["node"]["signedUrl"]["url"])
    assert workspace_image.tobytes() == portrait.tobytes()


async def test_the_characters_tab_keeps_the_seeds_three_rules(
    api: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given library rows marked each of the seed's three ways, and one unmarked
    rows = [
        ("a.png", [], {"type": "character_portrait"}, None),
        ("b.png", ["character"], {}, None),
        ("c.png", [], {}, "character"),
        ("d.png", ["landscape"], {}, "scenery"),
    ]
    for name, tags, roleplay, category in rows:
        await pool.execute(
            "INSERT INTO user_library (user_id, storage_path, mime_type, tags, roleplay_metadata, content_category)"
            " VALUES ($1, $2, 'image/png', $3, $4, $5)",
            alice, f"{alice}/{name}", tags, roleplay, category,
        )

    # when the library is listed by tab
    everything = (await api(LIBRARY, {"tab": "ALL"}, user=alice))["data"]["libraryAssets"]["edges"]
    characters = (await api(LIBRARY, {"tab": "CHARACTERS"}, user=alice))["data"]["libraryAssets"]["edges"]

    # then ALL has every row and CHARACTERS the three marked ones
    assert sorted(edge["node"]["path"].rsplit("/", 1)[1] for edge in everything) == ["a.png", "b.png", "c.png", "d.png"]
    assert sorted(edge["node"]["path"].rsplit("/", 1)[1] for edge in characters) == ["a.png", "b.png", "c.png"]
    # and rows whose objects do not exist get null URLs, not errors
    assert all(edge["node"]["signedUrl"] is None for edge in everything)
