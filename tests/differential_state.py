"""The fixed state the plans' differential test (tests/test_plan_differential.py) runs every operation on.

A database of its own (so no other test's truncation reaches it), built once through the app's own mutations and
its real worker, with graphql-core executing (plans off): an owner with characters of every kind (a stored portrait
and reference image, an external image, a draft's workspace image, a storage path with no object, none), jobs in
every status (completed portraits, a draft and a saved workspace image; a failed and a running one, put there with
the worker's own storage steps; a queued and a canceled one), library and workspace assets with their catalogue
rows, and one row of each asset kind whose size no GraphQL Int holds (``fileSizeBytes: Int!``, so an answer
holding it is nulled up to the nearest nullable parent); a stranger with a character and a queued job of their own;
and the ids, cursors and names the documents draw their arguments from.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from asgi_lifespan import LifespanManager

from server.app import create_app
from server.settings import Settings
from storage import job_attempts, jobs, user_library, workspace_assets
from storage.database import create_pool
from storage.enums import JobAttemptOutcome
from storage.migrate import migrate
from storage.user_library import NewLibraryAsset
from tests.conftest import GraphQL, graphql_over
from tests.generation_support import wait_for_job
from tests.support import TEST_JWT_SECRET, database_url_for, drop_database, new_database

# The tables whose rows the state is: a mutation the test runs must leave every one of them as it was.
STATE_TABLES = (
    "characters", "jobs", "job_attempts", "user_library", "workspace_assets", "stored_objects", "image_models",
)

CREATE_CHARACTER = "mutation($input: CreateCharacterInput!) { createCharacter(input: $input) { id } }"
PORTRAIT = "mutation($input: GenerateCharacterPortraitInput!) { generateCharacterPortrait(input: $input) { id } }"
IMAGE = "mutation($input: GenerateImageInput!) { generateImage(input: $input) { id } }"
SAVE = "mutation($id: ID!) { saveToLibrary(workspaceAssetId: $id) { id } }"
REFERENCE = "mutation($c: ID!, $a: ID!) { setReferenceImage(characterId: $c, libraryAssetId: $a) { id } }"
CANCEL = "mutation($id: ID!) { cancelJob(id: $id) { id } }"
JOB_ASSETS = "query($id: ID!) { job(id: $id) { workspaceAsset { id path } libraryAsset { id } } }"
MODELS = "{ imageModels { id available } }"
# Every list of a viewer's, a short page of each (and of each order of characters), for the cursors they hand out.
CURSORS = """
query($order: CharacterOrder!) {
  characters(first: 3, orderBy: $order) { edges { cursor } pageInfo { endCursor } }
  jobs(first: 3) { edges { cursor } }
  workspaceAssets(first: 2) { edges { cursor } }
  libraryAssets(first: 2) { edges { cursor } }
}
"""
ORDERS = ("CREATED_AT_DESC", "CREATED_AT_ASC", "UPDATED_AT_DESC", "UPDATED_AT_ASC")


@dataclass(frozen=True)
class DifferentialState:
    """The built state: how to reach it, who is in it, and the values documents are made from."""

    settings: Settings  # the apps' settings (no workers: nothing changes the state behind the test's back)
    owner: uuid.UUID
    stranger: uuid.UUID
    # Ids by kind ("character", "job", "workspace", "library", "model", "stranger"), every one of them real.
    ids: dict[str, tuple[str, ...]]
    cursors: tuple[str, ...]
    names: tuple[str, ...]
    # What the mutations may be given without changing anything (tests/differential_documents.py says why each).
    canceled_job: str
    finished_jobs: tuple[str, ...]  # completed and failed: cancelJob refuses them
    saved_workspace_assets: tuple[str, ...]  # saveToLibrary hands back their existing library asset
    draft_workspace_asset: str  # saveToLibrary refuses a draft's preview
    unavailable_models: tuple[str, ...]  # fal and Replicate models this server cannot run

    def all_ids(self) -> tuple[str, ...]:
        return tuple(value for values in self.ids.values() for value in values)


def state_settings(database_url: str, data_dir: Path, *, workers: int) -> Settings:
    return Settings.from_environ({
        "DATABASE_URL": database_url,
        "JWT_SECRET": TEST_JWT_SECRET,
        "PORTRAITS_DATA_DIR": str(data_dir),
        "PUBLIC_URL": "http://testserver",
        "WORKERS": str(workers),
        "IMAGE_SIZE": "64",
        "THUMBNAIL_MAX_SIDE": "16",
        # graphql-core's own execution builds the state: a bug in the plans shows in the test, not in its set-up.
        "EXECUTION_PLANS": "off",
    })


@contextlib.asynccontextmanager
async def app_client(settings: Settings, **app_options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app over its ASGI interface, lifespan included."""
    async with LifespanManager(create_app(settings, **app_options)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def data_of(graphql: GraphQL, query: str, variables: dict[str, Any] | None, user: uuid.UUID) -> Any:
    body = await graphql(query, variables, user=user)
    assert "errors" not in body, body
    return body["data"]


async def create_character(graphql: GraphQL, user: uuid.UUID, **values: Any) -> str:
    data = await data_of(graphql, CREATE_CHARACTER, {"input": values}, user)
    return str(data["createCharacter"]["id"])


async def new_job(graphql: GraphQL, user: uuid.UUID, query: str, values: dict[str, Any]) -> str:
    data = await data_of(graphql, query, {"input": values}, user)
    return str(next(iter(data.values()))["id"])


async def claim_next(pool: asyncpg.Pool, lease: str) -> uuid.UUID:
    """Take the one due job as a worker does (the claim and its attempt in one transaction)."""
    async with pool.acquire() as connection, connection.transaction():
        claimed = await jobs.claim(connection, lease_token=lease, worker_id="differential:1:a", lease_seconds=86400)
        assert claimed is not None
        await job_attempts.start(
            connection, job_id=claimed.job.id, lease_token=lease, worker_id="differential:1:a", host="differential",
            pid=1,
        )
        return claimed.job.id


@contextlib.asynccontextmanager
async def differential_state(server_url: str, data_dir: Path) -> AsyncIterator[DifferentialState]:
    """Build the state in a new database; dropped when the block ends."""
    name = await new_database(server_url, prefix="portraits_differential")
    url = database_url_for(server_url, name)
    try:
        await migrate(url)
        yield await _build(url, data_dir)
    finally:
        await drop_database(server_url, name)


async def _build(url: str, data_dir: Path) -> DifferentialState:
    owner, stranger = uuid.uuid4(), uuid.uuid4()
    ids: dict[str, list[str]] = {"character": [], "job": [], "workspace": [], "library": [], "stranger": []}

    # The worker's part: portraits (auto-saved to the library), a workspace image (then saved), a draft.
    async with app_client(state_settings(url, data_dir, workers=1)) as http:
        graphql = graphql_over(http)
        arwen = await create_character(
            graphql, owner, name="Arwen Starfall", description="An elven archer who keeps the northern watch.",
            appearanceTags=["silver hair", "green cloak"], traits="patient", persona="quiet, exact", gender="female",
            sceneBehaviorRules={"tone": "calm", "limits": [1, 2, {"nested": None}]},
        )
        borin = await create_character(
            graphql, owner, name="Borin Ashdown", description="A dwarf smith.", contentRating="NSFW",
            imageUrl="https://images.example.com/borin.png",
        )
        fenn = await create_character(graphql, owner, name="Fenn Harrow", description="A ferryman.", gender="male")
        ids["character"] += [arwen, borin, fenn]
        portrait = await new_job(graphql, owner, PORTRAIT, {"characterId": arwen, "seed": 11})
        second = await new_job(graphql, owner, PORTRAIT, {"characterId": fenn, "seed": 12, "quality": "FAST"})
        scene = await new_job(graphql, owner, IMAGE, {"prompt": "A lighthouse at dusk", "seed": 13})
        draft = await new_job(graphql, owner, PORTRAIT, {"draft": {"name": "Draft Dana", "description": "A draft."}})
        finished = []
        for job_id in (portrait, second, scene, draft):
            await wait_for_job(graphql, owner, job_id, status="COMPLETED")
            finished.append(job_id)
        ids["job"] += finished
        assets = {job_id: (await data_of(graphql, JOB_ASSETS, {"id": job_id}, owner))["job"] for job_id in finished}
        saved = await data_of(graphql, SAVE, {"id": assets[scene]["workspaceAsset"]["id"]}, owner)
        library = [assets[portrait]["libraryAsset"]["id"], assets[second]["libraryAsset"]["id"],
                   saved["saveToLibrary"]["id"]]
        ids["library"] += library
        ids["workspace"] += [assets[job_id]["workspaceAsset"]["id"] for job_id in finished]
        await data_of(graphql, REFERENCE, {"c": arwen, "a": library[0]}, owner)
        draft_path = assets[draft]["workspaceAsset"]["path"]
        models = (await data_of(graphql, MODELS, None, owner))["imageModels"]

    # The rest with no worker running: characters of every other kind, jobs left in each remaining status.
    settings = state_settings(url, data_dir, workers=0)
    async with app_client(settings) as http, contextlib.AsyncExitStack() as stack:
        graphql = graphql_over(http)
        pool = await create_pool(url, max_size=2)
        stack.push_async_callback(pool.close)
        ids["character"] += [
            await create_character(graphql, owner, name="Cyra Vell", description="No portrait yet."),
            await create_character(
                graphql, owner, name="Dax Morrow", description="A path with no object behind it.",
                imageUrl=f"user-library/{owner}/missing.png", referenceImageUrl=f"{owner}/also-missing.png",
            ),
            await create_character(
                graphql, owner, name="Esme Quill", description="Shown with the draft's workspace image.",
                imageUrl=draft_path,
            ),
        ]
        for number in range(1, 7):
            ids["character"].append(await create_character(
                graphql, owner, name=f"Extra {number} ar", description=f"Filler number {number}.",
                contentRating="NSFW" if number % 3 == 0 else "SFW", appearanceTags=[f"tag{number}"],
            ))
        failed = await new_job(graphql, owner, IMAGE, {"prompt": "A storm that will not render", "seed": 21})
        lease = "differential:1:a/failed"
        assert await claim_next(pool, lease) == uuid.UUID(failed)
        async with pool.acquire() as connection, connection.transaction():
            assert await jobs.fail(connection, job_id=uuid.UUID(failed), lease_token=lease, error="the model refused")
            assert await job_attempts.finish(
                connection, job_id=uuid.UUID(failed), lease_token=lease, outcome=JobAttemptOutcome.FAILED,
                error="the model refused", retryable=False,
            )
        # A library row no GraphQL Int can show (fileSizeBytes is Int!, seed Int): a list of it is null, with the
        # error raised in a non-null leaf and nulled up to the nearest nullable parent.
        async with pool.acquire() as connection:
            oversized = await user_library.create(connection, asset=NewLibraryAsset(
                user_id=owner, source_job_id=uuid.UUID(failed), storage_path=f"{owner}/imported.png",
                thumbnail_path=None, file_size_bytes=3_000_000_000, mime_type="image/png",
                original_prompt="imported from elsewhere", model_used=None, generation_seed=5_000_000_000, width=None,
                height=None, tags=("character",), roleplay_metadata={}, content_category="character",
            ))
        ids["library"].append(str(oversized.id))
        running = await new_job(graphql, owner, PORTRAIT, {"characterId": ids["character"][2], "seed": 22})
        lease = "differential:1:a/running"
        assert await claim_next(pool, lease) == uuid.UUID(running)
        await jobs.record_progress(
            pool, job_id=uuid.UUID(running), lease_token=lease, status="IN_PROGRESS", queue_position=None,
            percent=40, message="step 8/20",
        )
        waiting = await new_job(graphql, owner, IMAGE, {"prompt": "A queue that never moves"})
        canceled = await new_job(graphql, owner, IMAGE, {"prompt": "Changed my mind", "quality": "FAST"})
        await data_of(graphql, CANCEL, {"id": canceled}, owner)
        # Its image stored before the cancel, as big as no GraphQL Int can show (WorkspaceAsset.fileSizeBytes: Int!).
        async with pool.acquire() as connection:
            partial = await workspace_assets.create(
                connection, user_id=owner, job_id=uuid.UUID(canceled), temp_storage_path=f"{owner}/{canceled}.png",
                thumbnail_path=None, mime_type="image/png", file_size_bytes=3_000_000_000, original_prompt="Changed",
                model_used="local/portrait-v1", generation_seed=5_000_000_000, generation_settings={"quality": "fast"},
                ttl_seconds=86400,
            )
        ids["workspace"].append(str(partial.id))
        ids["job"] += [failed, running, waiting, canceled]

        ids["stranger"] += [
            await create_character(graphql, stranger, name="Zed Marrow", description="Someone else's."),
            await new_job(graphql, stranger, IMAGE, {"prompt": "Someone else's scene"}),
        ]

        cursors: list[str] = []
        for user in (owner, stranger):
            for order in ORDERS:
                lists = await data_of(graphql, CURSORS, {"order": order}, user)
                for connection in lists.values():
                    cursors += [edge["cursor"] for edge in connection["edges"]]
                    end = connection.get("pageInfo", {}).get("endCursor")
                    if end:
                        cursors.append(end)

    return DifferentialState(
        settings=settings,
        owner=owner,
        stranger=stranger,
        ids={**{kind: tuple(values) for kind, values in ids.items()},
             "model": tuple(model["id"] for model in models)},
        cursors=tuple(dict.fromkeys(cursors)),
        names=("Arwen Starfall", "Borin Ashdown", "Cyra Vell", "Dax Morrow", "Esme Quill", "Fenn Harrow", "Zed Marrow"),
        canceled_job=canceled,
        finished_jobs=(portrait, second, scene, draft, failed),
        saved_workspace_assets=tuple(assets[job_id]["workspaceAsset"]["id"] for job_id in (portrait, second, scene)),
        draft_workspace_asset=assets[draft]["workspaceAsset"]["id"],
        unavailable_models=tuple(model["id"] for model in models if not model["available"]),
    )


async def fingerprint(pool: asyncpg.Pool) -> str:
    """A digest of every row of the state's tables: equal before and after means nothing was written."""
    parts = [
        f"(SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t)"
        for table in STATE_TABLES
    ]
    digest: str = await pool.fetchval("SELECT " + " || ".join(parts))
    return digest
