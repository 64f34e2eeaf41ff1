"""Character.signedImageUrl / signedReferenceImageUrl: the seed's rules, on both object stores."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest

from server.settings import Settings
from storage.objects.catalog import CatalogedObjectStore
from storage.objects.paths import Bucket
from storage.objects.store import ObjectStore
from tests.conftest import GraphQL, graphql_logging_statements, graphql_over
from tests.support import error_codes

Fetch = Callable[..., Awaitable[httpx.Response]]
PNG = b"\x89PNG\r\n\x1a\n" + b"portrait" * 64
DAY, HOUR = 86400, 3600

PAGE = """
query($ttl: Int) {
  characters(first: 100) {
    edges { node {
      name imageUrl
      signedImageUrl(ttlSeconds: $ttl) { url expiresAt }
      signedReferenceImageUrl { url expiresAt }
    } }
  }
}
"""
CREATE = "mutation($input: CreateCharacterInput!) { createCharacter(input: $input) { id imageUrl referenceImageUrl } }"


@dataclass
class Backend:
    name: str
    graphql: GraphQL
    objects: CatalogedObjectStore


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, pool: asyncpg.Pool) -> Backend:
    store: ObjectStore = request.getfixturevalue(f"{request.param}_store")
    client: httpx.AsyncClient = request.getfixturevalue("client" if request.param == "local" else "s3_client")
    return Backend(request.param, graphql_over(client), CatalogedObjectStore(store, pool))


async def insert_character(
    pool: asyncpg.Pool, owner: uuid.UUID, name: str, image: str | None, reference: str | None = None
) -> None:
    """Straight into the table, as another tool or an older version might have written it."""
    await pool.execute(
        "INSERT INTO characters (user_id, name, description, image_url, reference_image_url) "
        "VALUES ($1, $2, 'd', $3, $4)",
        owner, name, image, reference,
    )


def nodes(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert "errors" not in body, body
    return {edge["node"]["name"]: edge["node"] for edge in body["data"]["characters"]["edges"]}


def seconds_left(signed: dict[str, Any]) -> float:
    return datetime.fromisoformat(signed["expiresAt"]).timestamp() - time.time()


async def test_a_page_mixing_every_kind_of_image(
    backend: Backend, pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID, fetch: Fetch
) -> None:
    # given: objects in both buckets, one of bob's, and characters pointing at them in every way
    objects = backend.objects
    await objects.put(Bucket.USER_LIBRARY, f"{alice}/job1_char1.png", PNG)
    await objects.put(Bucket.USER_LIBRARY, f"{alice}/job1_char1.thumb.webp", b"RIFFthumb")
    await objects.put(Bucket.WORKSPACE_TEMP, f"{alice}/job2_1764000000000.png", PNG + b"ws")
    await objects.put(Bucket.USER_LIBRARY, f"{alice}/bare.png", PNG + b"bare")
    await objects.put(Bucket.USER_LIBRARY, f"{bob}/secret.png", b"bob's")
    await insert_character(
        pool, alice, "library", f"user-library/{alice}/job1_char1.png", f"user-library/{alice}/job1_char1.png"
    )
    await insert_character(pool, alice, "workspace", f"workspace-temp/{alice}/job2_1764000000000.png")
    await insert_character(pool, alice, "external", "https://cdn.example.com/a.png")
    await insert_character(pool, alice, "gone", f"user-library/{alice}/never-stored.png")
    await insert_character(pool, alice, "none", None)
    await insert_character(pool, alice, "blank", "  ")
    await insert_character(pool, alice, "bare", f"{alice}/bare.png")
    await insert_character(pool, alice, "bobs", f"user-library/{bob}/secret.png")
    await insert_character(pool, alice, "bobs bare", f"{bob}/secret.png")
    await insert_character(pool, alice, "escape", f"user-library/{alice}/../{bob}/secret.png")
    # when
    found = nodes(await backend.graphql(PAGE, user=alice))
    # then: library and workspace paths are signed in their buckets, with their TTLs
    library = found["library"]["signedImageUrl"]
    assert (await fetch(library["url"])).content == PNG
    assert DAY - 5 <= seconds_left(library) <= DAY * 1.1 + 5
    assert found["library"]["signedReferenceImageUrl"]["url"] == library["url"]
    workspace = found["workspace"]["signedImageUrl"]
    assert (await fetch(workspace["url"])).content == PNG + b"ws"
    assert HOUR - 5 <= seconds_left(workspace) <= HOUR * 1.1 + 5
    # an external URL passes through unsigned
    assert found["external"]["signedImageUrl"] == {"url": "https://cdn.example.com/a.png", "expiresAt": None}
    # a bare path is a user-library path
    assert (await fetch(found["bare"]["signedImageUrl"]["url"])).content == PNG + b"bare"
    # nothing, a missing object, another user's object, an escaping path: null, and no error for the page
    for name in ("gone", "none", "blank", "bobs", "bobs bare", "escape"):
        assert found[name]["signedImageUrl"] is None, name
        assert found[name]["signedReferenceImageUrl"] is None, name


async def test_a_deleted_object_turns_the_url_to_null(backend: Backend, pool: asyncpg.Pool, alice: uuid.UUID) -> None:
    # given
    await backend.objects.put(Bucket.USER_LIBRARY, f"{alice}/p.png", PNG)
    await insert_character(pool, alice, "c", f"user-library/{alice}/p.png")
    assert nodes(await backend.graphql(PAGE, user=alice))["c"]["signedImageUrl"] is not None
    # when
    await backend.objects.delete(Bucket.USER_LIBRARY, f"{alice}/p.png")
    # then
    assert nodes(await backend.graphql(PAGE, user=alice))["c"]["signedImageUrl"] is None


async def test_the_same_page_twice_gives_the_same_urls(backend: Backend, pool: asyncpg.Pool, alice: uuid.UUID) -> None:
    await backend.objects.put(Bucket.USER_LIBRARY, f"{alice}/p.png", PNG)
    await insert_character(pool, alice, "c", f"user-library/{alice}/p.png")
    first = nodes(await backend.graphql(PAGE, user=alice))["c"]["signedImageUrl"]
    second = nodes(await backend.graphql(PAGE, user=alice))["c"]["signedImageUrl"]
    assert first == second


async def test_ttl_seconds_shortens_and_is_capped(backend: Backend, pool: asyncpg.Pool, alice: uuid.UUID) -> None:
    await backend.objects.put(Bucket.WORKSPACE_TEMP, f"{alice}/w.png", PNG)
    await insert_character(pool, alice, "c", f"workspace-temp/{alice}/w.png")
    short = nodes(await backend.graphql(PAGE, {"ttl": 60}, user=alice))["c"]["signedImageUrl"]
    assert 55 <= seconds_left(short) <= 66 + 1
    capped = nodes(await backend.graphql(PAGE, {"ttl": 30 * DAY}, user=alice))["c"]["signedImageUrl"]
    assert seconds_left(capped) <= HOUR * 1.1 + 1


@pytest.mark.parametrize(
    "document, variables",
    [
        (PAGE, None),  # the variable left out: the argument is omitted (UNSET to the resolver)
        (PAGE, {"ttl": None}),  # a null variable
        (PAGE.replace("ttlSeconds: $ttl", "ttlSeconds: null").replace("query($ttl: Int)", "query"), None),
    ],
    ids=["omitted", "null variable", "null literal"],
)
async def test_an_omitted_or_null_ttl_is_the_buckets_ttl(
    graphql: GraphQL, pool: asyncpg.Pool, local_store: ObjectStore, alice: uuid.UUID,
    document: str, variables: dict[str, object] | None,
) -> None:
    # given a workspace-temp image (a one-hour bucket)
    await CatalogedObjectStore(local_store, pool).put(Bucket.WORKSPACE_TEMP, f"{alice}/w.png", PNG)
    await insert_character(pool, alice, "c", f"workspace-temp/{alice}/w.png")

    # when the page asks without a TTL, or with a null one
    signed = nodes(await graphql(document, variables, user=alice))["c"]["signedImageUrl"]

    # then the URL lasts the bucket's hour
    assert HOUR - 5 <= seconds_left(signed) <= HOUR * 1.1 + 5


@pytest.mark.parametrize("ttl", [0, -1])
async def test_a_ttl_below_one_second_is_bad_user_input(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID, ttl: int
) -> None:
    await insert_character(pool, alice, "c", "https://cdn.example.com/a.png")
    body = await graphql(PAGE, {"ttl": ttl}, user=alice)
    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_signing_a_page_adds_no_sql_statement_and_a_plain_page_no_catalogue_probe(
    settings: Settings, pool: asyncpg.Pool, local_store: ObjectStore, alice: uuid.UUID
) -> None:
    # given: 100 characters with stored images, and an app that logs every statement it runs
    objects = CatalogedObjectStore(local_store, pool)
    for index in range(100):
        await objects.put(Bucket.USER_LIBRARY, f"{alice}/{index}.png", PNG)
        await insert_character(pool, alice, f"c{index}", f"user-library/{alice}/{index}.png", f"{alice}/{index}.png")
    async with graphql_logging_statements(settings) as (graphql, statements):
        plain = "{ characters(first: 100) { edges { node { name imageUrl } } } }"
        # when
        statements.clear()
        assert "errors" not in await graphql(plain, user=alice)
        without_urls = list(statements)
        statements.clear()
        signed = nodes(await graphql(PAGE, user=alice))
        with_urls = list(statements)
    # then: one statement each; only the signed page probes the catalogue, in that same statement
    assert len(without_urls) == 1
    assert len(with_urls) == 1
    assert "stored_objects" not in without_urls[0]
    assert "stored_objects" in with_urls[0]
    assert len(signed) == 100
    assert all(node["signedImageUrl"] and node["signedReferenceImageUrl"] for node in signed.values())


async def test_image_inputs_accept_own_storage_paths(graphql: GraphQL, alice: uuid.UUID) -> None:
    # when
    body = await graphql(
        CREATE,
        {"input": {"name": "n", "description": "d", "imageUrl": f"{alice}/a.png",
                   "referenceImageUrl": f"workspace-temp/{alice}/b.png"}},
        user=alice,
    )
    # then: a bare path is stored with its bucket
    assert "errors" not in body, body
    created = body["data"]["createCharacter"]
    assert created["imageUrl"] == f"user-library/{alice}/a.png"
    assert created["referenceImageUrl"] == f"workspace-temp/{alice}/b.png"


@pytest.mark.parametrize(
    "image",
    [
        "user-library/{bob}/a.png",
        "{bob}/a.png",
        "workspace-temp/{alice}/../{bob}/a.png",
        "user-library/{alice}//a.png",
        "user-library/{alice}\\a.png",
        "other-bucket/{alice}/a.png",
        "ftp://example.com/a.png",
        "javascript:alert(1)",
    ],
)
async def test_image_inputs_refuse_other_users_and_escaping_paths(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID, image: str
) -> None:
    body = await graphql(
        CREATE, {"input": {"name": "n", "description": "d", "imageUrl": image.format(alice=alice, bob=bob)}}, user=alice
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert body["errors"][0]["extensions"]["field"] == "imageUrl"
    assert await pool.fetchval("SELECT count(*) FROM characters") == 0
