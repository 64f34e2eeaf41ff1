"""S3 down for a while under a `portraits worker` process: jobs retry, finish once it is back, and leave nothing broken.

moto's S3 server is stopped mid-run (jobs at every stage: rendering,
storing to workspace-temp, copying to user-library) and started again on
the same port, its buckets kept, as an S3 endpoint that went away and came
back. Afterwards every catalog row, library row and character names an
object that exists and is whole, and every object is catalogued.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from moto.server import ThreadedMotoServer
from PIL import Image

from server.settings import Settings
from storage.objects.config import open_object_store
from storage.objects.paths import Bucket
from storage.objects.store import ObjectStore
from tests.conftest import s3_environ
from tests.generation_support import GraphQL, create_character, generate_portrait, get_character, wait_for_job
from tests.support import TEST_JWT_SECRET
from tests.test_worker_crash import start_worker_process

JOBS = 6
OLD_IMAGE = "https://example.com/old.png"


def moto_on(port: int) -> ThreadedMotoServer:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


async def wait_until(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while (value := await check()) in (None, False, [], 0):
        assert asyncio.get_running_loop().time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.02)
    return value


async def test_jobs_retry_while_s3_is_down_finish_when_it_returns_and_leave_nothing_dangling(
    graphql: GraphQL, pool: asyncpg.Pool, settings: Settings, alice: uuid.UUID, tmp_path: Path
) -> None:
    # given S3 (moto, a server of the test's own) with its buckets, and a worker process storing there
    moto = moto_on(0)
    port = moto.get_host_and_port()[1]
    s3 = s3_environ(f"http://127.0.0.1:{port}")
    store = await open_object_store(
        Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path / "s3"), "JWT_SECRET": TEST_JWT_SECRET, **s3}).objects
    )
    worker = start_worker_process(
        settings, tmp_path, WORKER_CONCURRENCY="2", LOCAL_RENDER_LATENCY_MS="150", JOB_RETRY_BASE_SECONDS="1",
        JOB_LEASE_SECONDS="10", **s3,
    )
    try:
        # and portrait jobs for characters that show an image of their own
        characters = [await create_character(graphql, alice, imageUrl=OLD_IMAGE) for _ in range(JOBS)]
        jobs = [await generate_portrait(graphql, alice, characterId=character["id"]) for character in characters]
        job_ids = [uuid.UUID(job["id"]) for job in jobs]

        # when S3 goes away once the first job is done, the others queued or under way
        await wait_until(lambda: completed(pool, job_ids), "a job completed")
        moto.stop()

        # then attempts fail on storage and go back to the queue, each character showing its old image or one
        # stored before S3 went (its workspace image, its library image)
        failed = await wait_until(lambda: storage_failures(pool, job_ids), "an attempt failed on storage")
        assert all(error.startswith("storage failed: ") for error in failed), failed
        kept = await pool.fetch("SELECT key FROM stored_objects WHERE key LIKE $1", f"%/{alice}/%")
        for character in characters:
            shown = (await get_character(graphql, alice, character["id"]))["imageUrl"]
            assert shown == OLD_IMAGE or shown in {row["key"] for row in kept}, shown

        # when S3 comes back on the same port, its buckets and objects as they were
        moto = moto_on(port)

        # then every job completes, each once
        for job in jobs:
            done = await wait_for_job(graphql, alice, job["id"], status=("COMPLETED", "FAILED"))
            assert done["status"] == "COMPLETED", done
        assert await pool.fetchval(
            "SELECT count(*) FROM job_attempts WHERE job_id = ANY($1) AND outcome = 'failed'", job_ids
        ) >= 1
        for job_id in job_ids:
            assert await pool.fetchval("SELECT count(*) FROM workspace_assets WHERE job_id = $1", job_id) == 1
            assert await pool.fetchval("SELECT count(*) FROM user_library WHERE source_job_id = $1", job_id) == 1

        # and nothing dangles: every object catalogued and whole, every catalog row, library row and character
        # naming an object that exists
        await assert_consistent(pool, store, alice, characters, graphql)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        await store.close()
        moto.stop()


async def completed(pool: asyncpg.Pool, job_ids: list[uuid.UUID]) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM jobs WHERE id = ANY($1) AND status = 'completed'", job_ids)
    return count


async def storage_failures(pool: asyncpg.Pool, job_ids: list[uuid.UUID]) -> list[str]:
    rows = await pool.fetch(
        "SELECT error FROM job_attempts WHERE job_id = ANY($1) AND outcome = 'failed'", job_ids
    )
    return [row["error"] for row in rows]


async def assert_consistent(
    pool: asyncpg.Pool, store: ObjectStore, user: uuid.UUID, characters: list[dict[str, Any]], graphql: GraphQL
) -> None:
    stored = {
        f"{bucket.value}/{info.path}": info
        for bucket in (Bucket.WORKSPACE_TEMP, Bucket.USER_LIBRARY)
        for info in await store.list_objects(bucket, f"{user}/")
    }
    catalog = {
        row["key"]: row["size_bytes"]
        for row in await pool.fetch("SELECT key, size_bytes FROM stored_objects WHERE key LIKE ANY($1)", [
            f"workspace-temp/{user}/%", f"user-library/{user}/%",
        ])
    }
    # every object is catalogued, with its size, and every catalogued object exists
    assert {key: info.size for key, info in stored.items()} == catalog
    assert len(stored) == 4 * JOBS  # an image and a thumbnail in each bucket per job
    # and whole: each decodes as an image
    for info in stored.values():
        data = await store.get(info.bucket, info.path)
        assert len(data) == info.size
        Image.open(io.BytesIO(data)).verify()  # raises on a truncated or corrupt image
    # and the rows name those objects
    for row in await pool.fetch(
        "SELECT temp_storage_path, thumbnail_path FROM workspace_assets WHERE user_id = $1", user
    ):
        assert {f"workspace-temp/{row['temp_storage_path']}", f"workspace-temp/{row['thumbnail_path']}"} <= set(stored)
    for row in await pool.fetch("SELECT storage_path, thumbnail_path FROM user_library WHERE user_id = $1", user):
        assert {f"user-library/{row['storage_path']}", f"user-library/{row['thumbnail_path']}"} <= set(stored)
    # and every character shows its library image, which exists
    for character in characters:
        shown = (await get_character(graphql, user, character["id"]))["imageUrl"]
        assert shown.startswith(f"user-library/{user}/") and shown in stored, shown
