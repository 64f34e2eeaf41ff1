"""A `portraits worker` process killed mid-job: another worker finishes the job, exactly once, and says so.

Killed while rendering, and killed inside the library auto-save (its S3
copies to user-library held by a proxy, none or one of the pair done).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from server.settings import Settings
from storage.objects.config import open_object_store
from storage.objects.paths import Bucket
from tests.conftest import s3_environ
from tests.generation_support import GraphQL, create_character, generate_portrait, get_character, wait_for_job
from tests.stalling_proxy import StallingProxy
from tests.support import TEST_JWT_SECRET

LEASE_SECONDS = 3
# Settings of the test run's own environment a worker process must not pick up.
INHERITED_NOT = frozenset({"FAL_KEY", "S3_ENDPOINT_URL", "OBJECT_STORE"})


def start_worker_process(settings: Settings, data_dir: Path, **env: str) -> subprocess.Popen[bytes]:
    """`python -m server.cli worker` on the test database and the test app's object folder (or ``env``'s S3)."""
    inherited = {name: value for name, value in os.environ.items() if name not in INHERITED_NOT}
    full_env = {
        **inherited,
        "DATABASE_URL": settings.database_url or "",
        "JWT_SECRET": TEST_JWT_SECRET,
        "PORTRAITS_DATA_DIR": str(data_dir),
        "OBJECTS_DIR": str(settings.objects.local_root),
        "PUBLIC_URL": "http://testserver",
        "WORKERS": "1",
        "SWEEP_INTERVAL_SECONDS": "0",
        "LOG_LEVEL": "warning",
        **env,
    }
    return subprocess.Popen([sys.executable, "-m", "server.cli", "worker"], env=full_env)


async def wait_until_locked(pool: asyncpg.Pool, job_id: str) -> str:
    """The lease token once a worker holds the job; fails the test after 30 s."""
    for _ in range(1500):
        row = await pool.fetchrow("SELECT status, locked_by FROM jobs WHERE id = $1", uuid.UUID(job_id))
        assert row is not None
        if row["status"] == "processing" and row["locked_by"] is not None:
            return str(row["locked_by"])
        await asyncio.sleep(0.02)
    raise AssertionError("no worker process claimed the job")


async def attempts_of(pool: asyncpg.Pool, job_id: uuid.UUID) -> list[asyncpg.Record]:
    """The job's rows in job_attempts, oldest first."""
    return list(await pool.fetch("SELECT * FROM job_attempts WHERE job_id = $1 ORDER BY number", job_id))


async def test_a_killed_worker_process_loses_its_job_to_another_which_finishes_it_once(
    graphql: GraphQL,
    pool: asyncpg.Pool,
    settings: Settings,
    start_generation: Callable[..., Awaitable[Any]],
    alice: uuid.UUID,
    tmp_path: Path,
) -> None:
    # given a portrait job claimed by a worker process whose renderer takes a minute
    character = await create_character(graphql, alice)
    job = await generate_portrait(graphql, alice, characterId=character["id"], seed=77)
    process = start_worker_process(
        settings, tmp_path, LOCAL_RENDER_LATENCY_MS="60000", JOB_LEASE_SECONDS=str(LEASE_SECONDS)
    )
    try:
        first_lease = await wait_until_locked(pool, job["id"])

        # when that process is killed outright, mid-job
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    # and the killed worker's attempt is still open, under its lease: nobody has closed it yet
    job_id = uuid.UUID(job["id"])
    (dead,) = await attempts_of(pool, job_id)
    assert (dead["outcome"], dead["finished_at"], dead["lease_token"]) == ("running", None, first_lease)
    # named after its host and process: host:pid:suffix
    host, pid, suffix = dead["worker_id"].split(":")
    assert (host, int(pid)) == (dead["host"], dead["pid"]) == (socket.gethostname(), process.pid) and suffix
    assert first_lease.startswith(dead["worker_id"] + "/")

    # then another worker claims the job once the dead one's lease runs out, and finishes it
    generation = await start_generation("local", lease_seconds=LEASE_SECONDS)
    done = await wait_for_job(graphql, alice, job["id"], status="COMPLETED")
    assert done["attempts"] == 2
    final = await pool.fetchrow("SELECT locked_by, worker_id FROM jobs WHERE id = $1", job_id)
    assert final is not None and final["locked_by"] is None
    # and the job keeps who finished it: the second worker, not the dead one
    (survivor,) = generation.workers
    assert final["worker_id"] == survivor.name != dead["worker_id"]

    # and its history has the dead attempt closed as abandoned, then exactly one completed attempt
    abandoned, completed = await attempts_of(pool, job_id)
    assert (abandoned["number"], abandoned["outcome"], abandoned["worker_id"]) == (1, "abandoned", dead["worker_id"])
    assert abandoned["finished_at"] == completed["started_at"], "closed by the claim that took the job over"
    assert abandoned["error"] is not None and "lease" in abandoned["error"]
    assert (completed["number"], completed["outcome"], completed["worker_id"]) == (2, "completed", survivor.name)
    assert (completed["host"], completed["pid"]) == (socket.gethostname(), os.getpid())
    assert completed["finished_at"] >= completed["started_at"] and completed["error"] is None
    # and the owner reads the same history, without the workers
    assert [
        (attempt["number"], attempt["outcome"]) for attempt in done["attemptHistory"]
    ] == [(1, "ABANDONED"), (2, "COMPLETED")]

    # and exactly once: one workspace row, one library row, one object pair in each bucket
    assert await pool.fetchval("SELECT count(*) FROM workspace_assets WHERE job_id = $1", job_id) == 1
    assert await pool.fetchval("SELECT count(*) FROM user_library WHERE source_job_id = $1", job_id) == 1
    keys = [row["key"] for row in await pool.fetch("SELECT key FROM stored_objects ORDER BY key")]
    assert len([key for key in keys if key.startswith(f"workspace-temp/{alice}/{job_id}_")]) == 2
    assert sorted(key for key in keys if key.startswith("user-library/")) == [
        f"user-library/{alice}/{job_id}_{character['id']}.png",
        f"user-library/{alice}/{job_id}_{character['id']}.thumb.webp",
    ]
    shown = await get_character(graphql, alice, character["id"])
    assert shown["imageUrl"] == f"user-library/{alice}/{job_id}_{character['id']}.png"
    assert shown["seedLocked"] == 77


async def test_a_live_worker_renews_its_lease_so_a_long_job_is_never_taken_over(
    graphql: GraphQL, pool: asyncpg.Pool, start_generation: Callable[..., Awaitable[Any]], alice: uuid.UUID
) -> None:
    # given a job whose rendering outlasts the lease (5 s against 3 s), on a live worker
    character = await create_character(graphql, alice)
    job = await generate_portrait(graphql, alice, characterId=character["id"])
    await start_generation("local", lease_seconds=LEASE_SECONDS, local_latency=5.0)
    first_lease = await wait_until_locked(pool, job["id"])

    # and a second, idle worker that would take any job whose lease ran out
    await start_generation("local", lease_seconds=LEASE_SECONDS, poll_seconds=0.2)

    # when the job finishes
    done = await wait_for_job(graphql, alice, job["id"], status="COMPLETED")

    # then the first worker kept it throughout: one attempt, one workspace row
    assert done["attempts"] == 1
    (attempt,) = await attempts_of(pool, uuid.UUID(job["id"]))
    assert (attempt["outcome"], attempt["lease_token"]) == ("completed", first_lease)
    assert await pool.fetchval("SELECT count(*) FROM workspace_assets WHERE job_id = $1", uuid.UUID(job["id"])) == 1


@pytest.mark.parametrize("copies_done", [0, 1], ids=["before-any-copy", "between-the-two-copies"])
async def test_a_worker_killed_during_the_library_auto_save_leaves_one_library_row_and_one_object_pair(
    graphql: GraphQL, pool: asyncpg.Pool, settings: Settings, s3_endpoint: str, alice: uuid.UUID, tmp_path: Path,
    copies_done: int,
) -> None:
    # given buckets of the test's own on S3 (moto), and a proxy in front of it that holds copies into user-library
    s3 = s3_environ(s3_endpoint)
    s3_settings = Settings.from_environ(
        {"PORTRAITS_DATA_DIR": str(tmp_path / "s3"), "JWT_SECRET": TEST_JWT_SECRET, **s3}
    )
    store = await open_object_store(s3_settings.objects)  # creates the buckets
    host, _, port = s3_endpoint.removeprefix("http://").partition(":")
    library_bucket = f"/{s3['S3_BUCKET_PREFIX']}{Bucket.USER_LIBRARY.value}/".encode()
    character = await create_character(graphql, alice)
    job = await generate_portrait(graphql, alice, characterId=character["id"], seed=5)
    job_id = uuid.UUID(job["id"])
    try:
        async with StallingProxy((host, int(port)), library_bucket, let_through=copies_done) as proxy:
            # when a worker process on that proxy reaches the auto-save (copies_done of the pair copied) and is
            # SIGKILLed there
            through_proxy = {**s3, "S3_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
            first = start_worker_process(settings, tmp_path, JOB_LEASE_SECONDS=str(LEASE_SECONDS), **through_proxy)
            try:
                await asyncio.wait_for(proxy.stalled.wait(), timeout=60)
                first.send_signal(signal.SIGKILL)
                assert first.wait(timeout=10) == -signal.SIGKILL
            finally:
                if first.poll() is None:
                    first.kill()
                    first.wait()
            assert proxy.passed == copies_done and proxy.held >= 1

        # then it died inside the auto-save: the workspace image stored, no library row, copies_done objects copied
        assert await pool.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == "processing"
        assert await pool.fetchval("SELECT count(*) FROM workspace_assets WHERE job_id = $1", job_id) == 1
        assert await pool.fetchval("SELECT count(*) FROM user_library WHERE source_job_id = $1", job_id) == 0
        assert len(await store.list_objects(Bucket.USER_LIBRARY, f"{alice}/")) == copies_done

        # when another worker process takes the job over once the lease has run out
        second = start_worker_process(settings, tmp_path, JOB_LEASE_SECONDS=str(LEASE_SECONDS), **s3)
        try:
            done = await wait_for_job(graphql, alice, job["id"], status="COMPLETED")
        finally:
            second.terminate()
            second.wait(timeout=30)

        # then the job completed on its second attempt, with exactly one library row and one object pair
        assert done["attempts"] == 2
        assert await pool.fetchval("SELECT count(*) FROM user_library WHERE source_job_id = $1", job_id) == 1
        library_path = f"{alice}/{job_id}_{character['id']}.png"
        pair = sorted([library_path, library_path.removesuffix(".png") + ".thumb.webp"])
        assert sorted(info.path for info in await store.list_objects(Bucket.USER_LIBRARY, f"{alice}/")) == pair
        catalogued = await pool.fetch(
            "SELECT key FROM stored_objects WHERE key LIKE $1 ORDER BY key", f"user-library/{alice}/%"
        )
        assert [row["key"] for row in catalogued] == [f"user-library/{key}" for key in pair]
        # and one workspace image pair, and the character on the library image, which exists
        assert len(await store.list_objects(Bucket.WORKSPACE_TEMP, f"{alice}/")) == 2
        shown = await get_character(graphql, alice, character["id"])
        assert shown["imageUrl"] == f"user-library/{library_path}"
        assert (await store.head(Bucket.USER_LIBRARY, library_path)).size > 0
    finally:
        await store.close()
