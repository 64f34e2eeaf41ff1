"""Generation when things go wrong, end to end: GraphQL in, real workers, the fake fal over real HTTP.

Retries with backoff, final failures (fal refusing, timing out, or handing over a result URL that answers
404), non-retryable provider errors, a
storage failure retried from the kept provider result, cancellation (queued
and running), two workers sharing one queue, and provider progress.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from server.settings import Settings
from tests.fake_fal import FakeFal
from tests.generation_support import (
    CANCEL,
    FAL_MODEL,
    GENERATE_IMAGE,
    WAIT_SECONDS,
    GraphQL,
    create_character,
    generate_portrait,
    get_character,
    get_job,
    wait_for_job,
)
from tests.support import error_codes, only_error

StartGeneration = Callable[..., Awaitable[Any]]


# --- helpers -------------------------------------------------------------------------


async def fal_model_id(graphql: GraphQL) -> str:
    body = await graphql("{ imageModels { id modelKey provider } }")
    assert "errors" not in body, body
    (model,) = [model for model in body["data"]["imageModels"] if model["modelKey"] == FAL_MODEL]
    assert model["provider"] == "FAL"
    return str(model["id"])


async def generate_image(graphql: GraphQL, user: uuid.UUID, prompt: str, model_id: str) -> dict[str, Any]:
    body = await graphql(GENERATE_IMAGE, {"input": {"prompt": prompt, "modelId": model_id}}, user=user)
    assert "errors" not in body, body
    job: dict[str, Any] = body["data"]["generateImage"]
    return job


async def cancel(graphql: GraphQL, user: uuid.UUID, job_id: str) -> dict[str, Any]:
    return await graphql(CANCEL, {"id": job_id}, user=user)


async def job_row(pool: asyncpg.Pool, job_id: str) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM jobs WHERE id = $1", uuid.UUID(job_id))
    assert row is not None
    return row


async def eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fails after WAIT_SECONDS."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)


async def rows_for_job(pool: asyncpg.Pool, job_id: str) -> tuple[int, int]:
    """How many workspace_assets and user_library rows the job has."""
    key = uuid.UUID(job_id)
    workspace = await pool.fetchval("SELECT count(*) FROM workspace_assets WHERE job_id = $1", key)
    library = await pool.fetchval("SELECT count(*) FROM user_library WHERE source_job_id = $1", key)
    return workspace, library


# --- retries and failures ------------------------------------------------------------------


async def test_a_fal_5xx_on_submit_is_retried_with_backoff_and_the_second_attempt_completes(
    graphql: GraphQL, start_generation: StartGeneration, fake_fal_server: FakeFal, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given fal refuses the first submit with a 500, and a worker whose backoff is long enough to see
    model_id = await fal_model_id(graphql)
    await start_generation(retry_base_seconds=0.5)
    fake_fal_server.behave(submit_status=500, submit_errors=1)

    # when a workspace image is requested on the fal model
    job = await generate_image(graphql, alice, "a lighthouse in a storm", model_id)

    # then the failed first attempt puts it back in the queue, its error readable meanwhile
    waiting = await wait_for_job(
        graphql, alice, job["id"], status=("QUEUED", "COMPLETED", "FAILED"), attempts_at_least=1
    )
    assert waiting["status"] == "QUEUED" and waiting["attempts"] == 1, waiting
    assert (
        waiting["error"] is not None and "500" in waiting["error"] and "submit refused by the fake" in waiting["error"]
    )
    assert waiting["workspaceAsset"] is None
    # and its next run was pushed past the failed attempt's start by the backoff
    row = await job_row(pool, job["id"])
    assert row["status"] == "queued" and row["provider_request_id"] is None
    assert row["run_after"] > row["started_at"] >= row["created_at"]

    # and the second attempt completes, the failure of the first one cleared
    done = await wait_for_job(graphql, alice, job["id"], status=("COMPLETED", "FAILED"))
    assert done["status"] == "COMPLETED" and done["attempts"] == 2, done
    assert done["error"] is None
    assert done["workspaceAsset"] is not None and done["workspaceAsset"]["path"].startswith(
        f"workspace-temp/{alice}/{job['id']}_"
    )
    # and fal was asked exactly twice: the refused submit and the one that went through
    assert fake_fal_server.calls["submit"] == 2
    assert len(fake_fal_server.submits) == 1 and fake_fal_server.submits[0]["prompt"] == "a lighthouse in a storm"
    assert await rows_for_job(pool, job["id"]) == (1, 0)


async def test_a_job_that_keeps_failing_fails_after_max_attempts_and_the_character_keeps_its_image(
    graphql: GraphQL, start_generation: StartGeneration, fake_fal_server: FakeFal, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a character with an external image, and fal refusing every submit
    model_id = await fal_model_id(graphql)
    character = await create_character(graphql, alice, imageUrl="https://example.com/old.png")
    fake_fal_server.behave(submit_status=500, submit_errors=None)
    await start_generation()

    # when a portrait is requested on the fal model
    job = await generate_portrait(graphql, alice, characterId=character["id"], modelId=model_id)
    assert job["maxAttempts"] == 3

    # then the job fails for good after its three attempts, saying why
    done = await wait_for_job(graphql, alice, job["id"])
    assert done["status"] == "FAILED" and done["attempts"] == 3, done
    assert done["error"].startswith("failed after 3 attempts: ")
    assert "fal answered 500" in done["error"] and "submit refused by the fake" in done["error"]
    assert fake_fal_server.calls["submit"] == 3 and fake_fal_server.submits == []
    assert done["workspaceAsset"] is None and done["libraryAsset"] is None

    # and the character still shows its old image
    shown = await get_character(graphql, alice, character["id"])
    assert shown["imageUrl"] == "https://example.com/old.png"
    assert (shown["referenceImageUrl"], shown["seedLocked"]) == (
        character["referenceImageUrl"],
        character["seedLocked"],
    )
    assert shown["signedImageUrl"]["url"] == "https://example.com/old.png"

    # and nothing was stored for the job: no workspace or library rows, and the job holds no lease
    assert await rows_for_job(pool, job["id"]) == (0, 0)
    row = await job_row(pool, job["id"])
    assert row["locked_by"] is None and row["completed_at"] is not None and row["result_url"] is None


async def test_a_provider_that_keeps_timing_out_fails_after_max_attempts_paid_once_and_the_character_keeps_its_image(
    graphql: GraphQL, start_generation: StartGeneration, fake_fal_server: FakeFal, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a character with an image, and fal accepting the request but never answering a status poll in time
    model_id = await fal_model_id(graphql)
    character = await create_character(graphql, alice, imageUrl="https://example.com/old.png")
    fake_fal_server.behave(hang="status", hang_seconds=2.0)
    await start_generation(fal_timeout=0.6, fal_request_timeout=0.2)

    # when a portrait is requested on the fal model
    job = await generate_portrait(graphql, alice, characterId=character["id"], modelId=model_id)

    # then every attempt times out and is retried, and the job fails after the last one, saying so
    done = await wait_for_job(graphql, alice, job["id"])
    assert done["status"] == "FAILED" and done["attempts"] == 3, done
    assert done["error"].startswith("failed after 3 attempts: fal: ") and "timed out" in done["error"], done["error"]
    assert [attempt["outcome"] for attempt in done["attemptHistory"]] == ["FAILED"] * 3
    # and the retries resumed the request fal had accepted: it was paid for once
    assert fake_fal_server.calls["submit"] == 1 and fake_fal_server.calls["status"] >= 3

    # and the character still shows its old image; nothing was stored and no lease is held
    shown = await get_character(graphql, alice, character["id"])
    assert shown["imageUrl"] == "https://example.com/old.png"
    assert await rows_for_job(pool, job["id"]) == (0, 0)
    assert (await job_row(pool, job["id"]))["locked_by"] is None


async def test_a_result_url_that_answers_404_is_retried_from_the_provider_then_fails_and_the_character_keeps_its_image(
    graphql: GraphQL, start_generation: StartGeneration, fake_fal_server: FakeFal, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a character with an image, and fal completing the request with a result URL that answers 404
    model_id = await fal_model_id(graphql)
    character = await create_character(graphql, alice, imageUrl="https://example.com/old.png")
    fake_fal_server.behave(file_status=404)
    await start_generation()

    # when a portrait is requested on the fal model
    job = await generate_portrait(graphql, alice, characterId=character["id"], modelId=model_id)

    # then each attempt asks fal for the result again (the request is kept: paid once) and tries its URL
    done = await wait_for_job(graphql, alice, job["id"])
    assert done["status"] == "FAILED" and done["attempts"] == 3, done
    assert done["error"].startswith("failed after 3 attempts: downloading the result failed: "), done["error"]
    assert "answered 404" in done["error"]
    assert fake_fal_server.calls["submit"] == 1 and fake_fal_server.calls["result"] == 3
    assert fake_fal_server.calls["file"] >= 3

    # and the character still shows its old image; nothing was stored
    shown = await get_character(graphql, alice, character["id"])
    assert shown["imageUrl"] == "https://example.com/old.png"
    assert await rows_for_job(pool, job["id"]) == (0, 0)


@pytest.mark.parametrize(
    ("result", "reason"),
    [("no_images", "has no images"), ("error_detail", "Content policy violation (fake)")],
)
async def test_a_non_retryable_provider_error_fails_the_job_after_one_attempt(
    graphql: GraphQL, start_generation: StartGeneration, fake_fal_server: FakeFal, pool: asyncpg.Pool,
    alice: uuid.UUID, result: str, reason: str,
) -> None:
    # given fal accepts and runs the request, but its result is unusable
    model_id = await fal_model_id(graphql)
    fake_fal_server.behave(result=result)
    await start_generation()

    # when an image is requested on the fal model
    job = await generate_image(graphql, alice, "a quiet harbour at dawn", model_id)

    # then it fails on the first attempt, without the "after N attempts" of a retried failure
    done = await wait_for_job(graphql, alice, job["id"])
    assert done["status"] == "FAILED" and done["attempts"] == 1, done
    assert reason in done["error"] and not done["error"].startswith("failed after")
    row = await job_row(pool, job["id"])
    assert done["error"].startswith("fal: ") and row["provider_request_id"] in done["error"]
    # and it was paid for once, never resubmitted
    assert fake_fal_server.calls["submit"] == 1 and fake_fal_server.calls["result"] == 1
    assert await rows_for_job(pool, job["id"]) == (0, 0)


async def test_a_storage_failure_is_retried_from_the_kept_result_without_paying_twice(
    graphql: GraphQL, start_generation: StartGeneration, fake_fal_server: FakeFal, pool: asyncpg.Pool,
    settings: Settings, alice: uuid.UUID,
) -> None:
    # given a character, a worker on the local object store (backoff long enough to repair in between)
    model_id = await fal_model_id(graphql)
    character = await create_character(graphql, alice, imageUrl="https://example.com/old.png")
    await start_generation("local", retry_base_seconds=0.5)
    # and the workspace-temp bucket made unwritable: its folder replaced by a regular file
    bucket: Path = settings.objects.local_root / "workspace-temp"
    aside = bucket.with_name("workspace-temp.sabotaged-aside")
    bucket.rename(aside)
    try:
        bucket.write_bytes(b"not a folder")

        # when a portrait is requested on the fal model
        job = await generate_portrait(graphql, alice, characterId=character["id"], modelId=model_id)

        # then the first attempt gets the image from fal but cannot store it, and goes back to the queue
        async def first_failure() -> asyncpg.Record | None:
            row = await job_row(pool, job["id"])
            return row if row["attempts"] >= 1 and (row["status"] != "processing" or row["error"] is not None) else None

        failed = await eventually(first_failure, "the first attempt failed")
        assert failed["status"] == "queued" and failed["attempts"] == 1, dict(failed)
        assert failed["error"].startswith("storage failed: ") and "workspace-temp" in failed["error"]
        # and the provider's result was kept for the retry
        assert failed["result_url"] == fake_fal_server.file_url(failed["provider_request_id"])
        assert fake_fal_server.calls["submit"] == 1 and fake_fal_server.calls["file"] == 1
        # and the character was not touched
        assert (await get_character(graphql, alice, character["id"]))["imageUrl"] == "https://example.com/old.png"

        # when the bucket is repaired before the retry is due
        bucket.unlink()
        aside.rename(bucket)
    finally:
        if aside.exists():
            if bucket.is_file():
                bucket.unlink()
            aside.rename(bucket)

    # then the retry completes from the kept result
    done = await wait_for_job(graphql, alice, job["id"])
    assert done["status"] == "COMPLETED" and done["attempts"] == 2 and done["error"] is None, done
    # and fal was paid once; the image was downloaded again instead
    assert fake_fal_server.calls["submit"] == 1 and len(fake_fal_server.submits) == 1
    assert fake_fal_server.calls["file"] == 2
    row = await job_row(pool, job["id"])
    assert row["provider_request_id"] == failed["provider_request_id"]
    # and the character ends on its library path, with one workspace and one library row
    library_path = f"user-library/{alice}/{job['id']}_{character['id']}.png"
    assert done["libraryAsset"]["path"] == library_path
    shown = await get_character(graphql, alice, character["id"])
    assert shown["imageUrl"] == library_path and shown["signedImageUrl"] is not None
    assert await rows_for_job(pool, job["id"]) == (1, 1)
    assert (settings.objects.local_root / library_path).is_file()


# --- cancellation -----------------------------------------------------------------------------


async def test_a_canceled_queued_job_is_never_run_and_cancel_follows_its_rules(
    graphql: GraphQL, start_generation: StartGeneration, fake_fal_server: FakeFal, pool: asyncpg.Pool,
    alice: uuid.UUID, bob: uuid.UUID,
) -> None:
    # given a fal job queued while no worker runs
    model_id = await fal_model_id(graphql)
    queued = await generate_image(graphql, alice, "a job nobody will run", model_id)
    assert queued["status"] == "QUEUED"

    # when bob tries to cancel it
    body = await cancel(graphql, bob, queued["id"])
    # then he is told it does not exist, and it stays queued
    assert error_codes(body) == ["NOT_FOUND"], body
    assert (await get_job(graphql, alice, queued["id"]))["status"] == "QUEUED"

    # when alice cancels it
    body = await cancel(graphql, alice, queued["id"])
    # then it is canceled, saying so
    assert "errors" not in body, body
    assert body["data"]["cancelJob"] == {"id": queued["id"], "status": "CANCELED", "error": "canceled by the user"}

    # when a worker starts and another job is queued after it
    await start_generation()
    later = await generate_image(graphql, alice, "the job that does run", model_id)
    done = await wait_for_job(graphql, alice, later["id"])
    assert done["status"] == "COMPLETED", done

    # then the worker ran only the later job: the canceled one never reached fal
    canceled = await get_job(graphql, alice, queued["id"])
    assert canceled["status"] == "CANCELED" and canceled["attempts"] == 0 and canceled["workspaceAsset"] is None
    assert fake_fal_server.calls["submit"] == 1
    assert [submit["prompt"] for submit in fake_fal_server.submits] == ["the job that does run"]
    row = await job_row(pool, queued["id"])
    assert row["started_at"] is None and row["provider_request_id"] is None

    # when alice cancels it again, it is simply returned
    again = await cancel(graphql, alice, queued["id"])
    assert "errors" not in again and again["data"]["cancelJob"]["status"] == "CANCELED", again

    # when alice cancels the completed job, she is told why not, and it stays completed
    refused = only_error(await cancel(graphql, alice, later["id"]))
    assert refused["extensions"]["code"] == "BAD_USER_INPUT" and "completed" in refused["message"]
    assert (await get_job(graphql, alice, later["id"]))["status"] == "COMPLETED"

    # when bob cancels alice's finished jobs, they do not exist for him either
    assert error_codes(await cancel(graphql, bob, queued["id"])) == ["NOT_FOUND"]
    assert error_codes(await cancel(graphql, bob, later["id"])) == ["NOT_FOUND"]


async def test_canceling_a_running_fal_job_stops_it_and_cancels_the_fal_request(
    graphql: GraphQL, start_generation: StartGeneration, fake_fal_server: FakeFal, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a fal request that never finishes, and a worker running it
    model_id = await fal_model_id(graphql)
    fake_fal_server.behave(polls_before_done=10_000)
    generation = await start_generation()
    job = await generate_image(graphql, alice, "an endless render", model_id)

    async def running_with_progress() -> dict[str, Any] | None:
        current = await get_job(graphql, alice, job["id"])
        return current if current["status"] == "PROCESSING" and current["providerProgress"] is not None else None

    running = await eventually(running_with_progress, "the job is running at fal")
    assert running["providerProgress"]["status"] in ("IN_QUEUE", "IN_PROGRESS")
    request_id = (await job_row(pool, job["id"]))["provider_request_id"]
    assert request_id is not None and fake_fal_server.cancelled == []

    # when alice cancels it
    body = await cancel(graphql, alice, job["id"])

    # then it is canceled at once
    assert "errors" not in body, body
    assert body["data"]["cancelJob"]["status"] == "CANCELED"
    # and the worker cancels the fal request and lets the job go
    await eventually(lambda: _async(request_id in fake_fal_server.cancelled), "fal saw the cancel")
    assert fake_fal_server.cancelled == [request_id]
    await eventually(lambda: _async(not any(worker.running_jobs for worker in generation.workers)), "the worker let go")

    # and the job stays canceled, with nothing written for it
    canceled = await get_job(graphql, alice, job["id"])
    assert (
        canceled["status"] == "CANCELED" and canceled["attempts"] == 1 and canceled["error"] == "canceled by the user"
    )
    assert canceled["workspaceAsset"] is None
    assert await rows_for_job(pool, job["id"]) == (0, 0)
    row = await job_row(pool, job["id"])
    assert row["locked_by"] is None and row["result_url"] is None
    assert fake_fal_server.calls["submit"] == 1 and fake_fal_server.calls["result"] == 0


async def _async(value: Any) -> Any:
    return value


# --- many workers, progress -----------------------------------------------------------------------


async def test_two_workers_never_run_the_same_job(
    graphql: GraphQL, start_generation: StartGeneration, fake_fal_server: FakeFal, pool: asyncpg.Pool
) -> None:
    # given two workers of four slots each on one queue
    model_id = await fal_model_id(graphql)
    generation = await start_generation(workers=2, concurrency=4)
    assert len(generation.workers) == 2

    # when three users queue eight fal images each (under the per-user cap of ten active jobs)
    users = [uuid.uuid4() for _ in range(3)]
    queued = [
        (user, await generate_image(graphql, user, f"scene {u}-{n}", model_id))
        for n in range(8)
        for u, user in enumerate(users)
    ]

    # then every job completes on its first attempt
    for user, job in queued:
        done = await wait_for_job(graphql, user, job["id"])
        assert done["status"] == "COMPLETED" and done["attempts"] == 1 and done["error"] is None, done

    # and fal saw each job's prompt exactly once
    prompts = sorted(job["prompt"] for _, job in queued)
    assert fake_fal_server.calls["submit"] == len(queued) == 24
    assert sorted(submit["prompt"] for submit in fake_fal_server.submits) == prompts
    # and each job has a request of its own
    ids = [uuid.UUID(job["id"]) for _, job in queued]
    request_ids = await pool.fetch("SELECT provider_request_id FROM jobs WHERE id = ANY($1::uuid[])", ids)
    assert len({row["provider_request_id"] for row in request_ids} - {None}) == 24
    # and exactly one workspace image per job
    per_job = await pool.fetch("SELECT job_id, count(*) AS n FROM workspace_assets GROUP BY job_id")
    assert sorted(row["job_id"] for row in per_job) == sorted(ids) and {row["n"] for row in per_job} == {1}


async def test_provider_progress_is_visible_while_running_and_ends_completed(
    graphql: GraphQL, start_generation: StartGeneration, fake_fal_server: FakeFal, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given fal reports queue positions 3, 2, 1, then in progress, each status answer taking a while
    model_id = await fal_model_id(graphql)
    fake_fal_server.behave(queue_positions=(3, 2, 1), polls_before_done=4, hang="status", hang_seconds=0.15)
    await start_generation()

    # when an image is generated and its job watched through GraphQL
    job = await generate_image(graphql, alice, "a market at noon", model_id)
    seen: list[tuple[str, int | None] | None] = []
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while True:
        current = await get_job(graphql, alice, job["id"])
        progress = current["providerProgress"]
        observed = None if progress is None else (progress["status"], progress["queuePosition"])
        if not seen or seen[-1] != observed:
            seen.append(observed)
        if current["status"] in ("COMPLETED", "FAILED", "CANCELED"):
            break
        assert asyncio.get_running_loop().time() < deadline, f"the job never finished: {current}"
        await asyncio.sleep(0.01)

    # then it completed
    assert current["status"] == "COMPLETED" and current["attempts"] == 1, current
    # and what the client saw followed fal's order, positions included
    expected = [None, ("IN_QUEUE", 3), ("IN_QUEUE", 2), ("IN_QUEUE", 1), ("IN_PROGRESS", None), ("COMPLETED", None)]
    assert [state for state in expected if state in seen] == seen, seen
    assert any(state is not None and state[0] == "IN_QUEUE" and state[1] is not None for state in seen), seen
    # and the completed job shows fal's final word, with no queue position left
    assert current["providerProgress"] == {"status": "COMPLETED", "queuePosition": None}
    row = await job_row(pool, job["id"])
    assert (row["provider_status"], row["queue_position"]) == ("COMPLETED", None)
