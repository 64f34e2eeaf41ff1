"""Generation on Replicate end to end: GraphQL in, real workers, the fake Replicate API over real HTTP.

A portrait on SDXL reaches workspace-temp and the library as a fal or local one does; Replicate's statuses show
in providerProgress; its refusals (422, 5xx, 429) and a failed prediction end or retry the job as they should; a
canceled job cancels its prediction; and a worker killed mid-prediction never makes the next one pay again.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from server.settings import Settings
from tests.conftest import token_for
from tests.fake_replicate import SDXL_MODEL, FakeReplicate
from tests.generation_support import (
    CANCEL,
    GENERATE_IMAGE,
    WAIT_SECONDS,
    GraphQL,
    create_character,
    generate_portrait,
    get_character,
    get_job,
    wait_for_job,
)
from tests.realtime_support import GraphQLSocket, data_of
from tests.test_worker_crash import start_worker_process

StartGeneration = Callable[..., Awaitable[Any]]
LEASE_SECONDS = 3


async def sdxl_model_id(graphql: GraphQL) -> str:
    body = await graphql("{ imageModels { id modelKey provider available } }")
    assert "errors" not in body, body
    (model,) = [model for model in body["data"]["imageModels"] if model["modelKey"] == SDXL_MODEL]
    assert (model["provider"], model["available"]) == ("REPLICATE", True)
    return str(model["id"])


async def generate_image(graphql: GraphQL, user: uuid.UUID, prompt: str, model_id: str) -> dict[str, Any]:
    body = await graphql(GENERATE_IMAGE, {"input": {"prompt": prompt, "modelId": model_id}}, user=user)
    assert "errors" not in body, body
    job: dict[str, Any] = body["data"]["generateImage"]
    return job


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
        await asyncio.sleep(0.02)


# --- the happy path ------------------------------------------------------------------------------


async def test_a_portrait_on_sdxl_is_created_once_downloaded_into_the_workspace_and_saved_to_the_library(
    graphql: GraphQL, start_generation: StartGeneration, fake_replicate_server: FakeReplicate, pool: asyncpg.Pool,
    alice: uuid.UUID,
) -> None:
    """Given a character and a worker, when a portrait is generated on SDXL (Replicate), then one prediction is
    created with the portrait prompt and the job's seed, its output is downloaded into workspace-temp and auto-saved
    to the library, and the job keeps the prediction id and shows COMPLETED."""
    model_id = await sdxl_model_id(graphql)
    await start_generation()
    character = await create_character(graphql, alice)

    job = await generate_portrait(graphql, alice, characterId=character["id"], modelId=model_id, seed=4242)
    done = await wait_for_job(graphql, alice, job["id"])

    assert done["status"] == "COMPLETED" and done["attempts"] == 1 and done["error"] is None, done
    assert done["modelKey"] == SDXL_MODEL
    assert done["providerProgress"] == {"status": "COMPLETED", "queuePosition": None}
    (created,) = fake_replicate_server.creations
    assert created["input"]["seed"] == 4242 and "Seraphine Vale" in created["input"]["prompt"]
    assert created["input"]["num_inference_steps"] == 50
    row = await job_row(pool, job["id"])
    (prediction_id,) = fake_replicate_server.prediction_ids()
    assert row["provider_request_id"] == prediction_id
    assert row["result_url"] == fake_replicate_server.file_url(prediction_id)
    assert fake_replicate_server.calls["file"] == 1
    # the image is the fake's PNG, stored in workspace-temp, then in the library the character points at
    workspace = done["workspaceAsset"]
    assert workspace["path"].startswith(f"workspace-temp/{alice}/{job['id']}_") and workspace["path"].endswith(".png")
    assert (workspace["width"], workspace["height"], workspace["seed"]) == (64, 64, 4242)
    assert done["libraryAsset"]["path"] == f"user-library/{alice}/{job['id']}_{character['id']}.png"
    shown = await get_character(graphql, alice, character["id"])
    assert shown["imageUrl"] == done["libraryAsset"]["path"] and shown["seedLocked"] == 4242


async def test_replicates_statuses_show_in_provider_progress_in_order(
    graphql: GraphQL, start_generation: StartGeneration, fake_replicate_server: FakeReplicate, alice: uuid.UUID
) -> None:
    """Given a prediction that is starting, then processing, each poll answered slowly, when its job is watched
    through GraphQL, then providerProgress goes IN_QUEUE, IN_PROGRESS, COMPLETED (no queue position: Replicate
    gives none)."""
    model_id = await sdxl_model_id(graphql)
    await start_generation()
    fake_replicate_server.behave(polls_starting=3, polls_before_done=6, hang="get", hang_seconds=0.1)

    job = await generate_image(graphql, alice, "a market at noon", model_id)
    seen: list[tuple[str, Any] | None] = []
    while True:
        current = await get_job(graphql, alice, job["id"])
        progress = current["providerProgress"]
        observed = None if progress is None else (progress["status"], progress["queuePosition"])
        if not seen or seen[-1] != observed:
            seen.append(observed)
        if current["status"] in ("COMPLETED", "FAILED", "CANCELED"):
            break
        await asyncio.sleep(0.01)

    assert current["status"] == "COMPLETED", current
    expected = [None, ("IN_QUEUE", None), ("IN_PROGRESS", None), ("COMPLETED", None)]
    assert [state for state in expected if state in seen] == seen, seen
    assert ("IN_QUEUE", None) in seen and ("IN_PROGRESS", None) in seen, seen


PROGRESS_DETAIL = """
query($id: ID!) { job(id: $id) { status providerProgress { status queuePosition percent message } } }
"""
JOB_UPDATED_DETAIL = """
subscription($id: ID!) { jobUpdated(id: $id) { status providerProgress { status percent message } } }
"""


async def test_replicates_logs_show_a_rising_percent_and_a_message_in_provider_progress(
    graphql: GraphQL, start_generation: StartGeneration, fake_replicate_server: FakeReplicate, alice: uuid.UUID,
    pool: asyncpg.Pool,
) -> None:
    """Given a prediction whose logs grow a tqdm bar (10 more of its 50 steps each poll), when its job runs on
    the real worker and is watched through GraphQL, then providerProgress shows no percent while starting, then a
    percent that rises while processing with the bar's line as its message, and 100 once completed; the job row
    keeps both."""
    model_id = await sdxl_model_id(graphql)
    await start_generation()
    fake_replicate_server.behave(polls_starting=1, polls_before_done=5, hang="get", hang_seconds=0.1)

    job = await generate_image(graphql, alice, "a harbour at dawn", model_id)
    seen: list[dict[str, Any]] = []
    while True:
        body = await graphql(PROGRESS_DETAIL, {"id": job["id"]}, user=alice)
        assert "errors" not in body, body
        current = body["data"]["job"]
        progress = current["providerProgress"]
        if progress is not None and (not seen or seen[-1] != progress):
            seen.append(progress)
        if current["status"] in ("COMPLETED", "FAILED", "CANCELED"):
            break
        await asyncio.sleep(0.01)

    assert current["status"] == "COMPLETED", current
    queued = [progress for progress in seen if progress["status"] == "IN_QUEUE"]
    assert all(progress["percent"] is None and progress["message"] is None for progress in queued), seen
    running = [progress for progress in seen if progress["status"] == "IN_PROGRESS"]
    percents = [progress["percent"] for progress in running]
    assert len(set(percents)) >= 2 and percents == sorted(percents) and 0 < percents[0] < 100, seen
    assert all(f"{progress['percent']}%|" in progress["message"] for progress in running), seen
    assert seen[-1] == {
        "status": "COMPLETED", "queuePosition": None, "percent": 100,
        "message": "100%|██████████| 50/50 [00:01<00:01, 7.60it/s]",
    }
    row = await job_row(pool, job["id"])
    assert (row["provider_percent"], row["provider_message"]) == (100, seen[-1]["message"])


async def test_job_updated_sends_each_percent_of_replicates_progress(
    live_server: str, graphql: GraphQL, start_generation: StartGeneration, fake_replicate_server: FakeReplicate,
    alice: uuid.UUID,
) -> None:
    """Given a subscriber to a Replicate job's jobUpdated, when the real worker runs it while its logs' bar
    grows, then the subscriber receives the percent rising (each change its own message) up to 100 on
    completion, with the bar's line as message."""
    model_id = await sdxl_model_id(graphql)
    fake_replicate_server.behave(polls_starting=1, polls_before_done=5, hang="get", hang_seconds=0.1)
    job = await generate_image(graphql, alice, "a harbour at dusk", model_id)
    async with GraphQLSocket.open(live_server, token=token_for(alice)) as socket:
        operation = await socket.subscribe(JOB_UPDATED_DETAIL, {"id": job["id"]})
        first = data_of(await socket.next_result(), "jobUpdated")
        await start_generation()
        rest = [data_of(message, "jobUpdated") for message in await socket.results_until_complete(operation)]

    updates = [first, *rest]
    assert updates[-1]["status"] == "COMPLETED", updates
    percents = [update["providerProgress"]["percent"] for update in updates
                if update["providerProgress"] is not None and update["providerProgress"]["status"] == "IN_PROGRESS"]
    assert len(set(percents)) >= 2 and percents == sorted(percents), updates
    assert updates[-1]["providerProgress"]["percent"] == 100
    assert updates[-1]["providerProgress"]["message"].startswith("100%|")


# --- refusals and failures ------------------------------------------------------------------------


async def test_a_failed_prediction_fails_the_job_at_once_with_replicates_error(
    graphql: GraphQL, start_generation: StartGeneration, fake_replicate_server: FakeReplicate, pool: asyncpg.Pool,
    alice: uuid.UUID,
) -> None:
    """Given a prediction that fails on Replicate's side, when its job runs, then the job fails after one attempt
    (a retry would resume the same failed prediction) with Replicate's error, and nothing is stored."""
    model_id = await sdxl_model_id(graphql)
    await start_generation()
    fake_replicate_server.behave(final_status="failed", error="NSFW content detected (fake)")

    job = await generate_image(graphql, alice, "a storm", model_id)
    done = await wait_for_job(graphql, alice, job["id"])

    prediction_id = (await job_row(pool, job["id"]))["provider_request_id"]
    assert done["status"] == "FAILED" and done["attempts"] == 1, done
    assert done["error"] == f"replicate: prediction {prediction_id} failed: NSFW content detected (fake)"
    assert done["workspaceAsset"] is None and fake_replicate_server.calls["file"] == 0
    assert len(fake_replicate_server.creations) == 1


async def test_input_replicate_refuses_fails_the_job_at_once_with_its_reason(
    graphql: GraphQL, start_generation: StartGeneration, fake_replicate_server: FakeReplicate, pool: asyncpg.Pool,
    alice: uuid.UUID,
) -> None:
    """Given a server that asks for 2048-pixel images (more than the model takes), when a job runs, then Replicate's
    422 fails it after one attempt, its error naming the field and why, and no prediction exists."""
    model_id = await sdxl_model_id(graphql)
    await start_generation(image_width=2048, image_height=2048)

    job = await generate_image(graphql, alice, "a wide panorama", model_id)
    done = await wait_for_job(graphql, alice, job["id"])

    assert done["status"] == "FAILED" and done["attempts"] == 1, done
    assert "422" in done["error"] and "input.width: Must be less than or equal to 1024" in done["error"]
    assert fake_replicate_server.creations == []
    assert (await job_row(pool, job["id"]))["provider_request_id"] is None


async def test_a_5xx_on_creation_is_retried_by_the_queue_and_one_prediction_is_paid_for(
    graphql: GraphQL, start_generation: StartGeneration, fake_replicate_server: FakeReplicate, alice: uuid.UUID
) -> None:
    """Given Replicate answers the first creation with a 503, when the job runs, then the attempt fails retryable
    (its error readable), the next attempt creates the prediction, and the job completes."""
    model_id = await sdxl_model_id(graphql)
    await start_generation()
    fake_replicate_server.behave(create_errors=1, create_error_status=503)

    job = await generate_image(graphql, alice, "a lighthouse", model_id)
    done = await wait_for_job(graphql, alice, job["id"])

    assert done["status"] == "COMPLETED" and done["attempts"] == 2, done
    (first, second) = done["attemptHistory"]
    assert (first["outcome"], first["retryable"], second["outcome"]) == ("FAILED", True, "COMPLETED")
    assert "503" in first["error"]
    assert fake_replicate_server.calls["create"] == 2 and len(fake_replicate_server.creations) == 1


async def test_a_429_is_waited_out_within_the_attempt(
    graphql: GraphQL, start_generation: StartGeneration, fake_replicate_server: FakeReplicate, alice: uuid.UUID
) -> None:
    """Given two 429s with Retry-After 0.2 s on the creation, when the job runs, then its one attempt waits them out
    and completes with one prediction."""
    model_id = await sdxl_model_id(graphql)
    await start_generation()
    fake_replicate_server.behave(rate_limited=2, rate_limited_kinds=("create",), retry_after="0.2")

    job = await generate_image(graphql, alice, "a quiet harbour", model_id)
    done = await wait_for_job(graphql, alice, job["id"])

    assert done["status"] == "COMPLETED" and done["attempts"] == 1, done
    assert fake_replicate_server.calls["create"] == 3 and len(fake_replicate_server.creations) == 1


# --- cancel and crash -------------------------------------------------------------------------------


async def test_canceling_a_running_job_cancels_its_prediction(
    graphql: GraphQL, start_generation: StartGeneration, fake_replicate_server: FakeReplicate, pool: asyncpg.Pool,
    alice: uuid.UUID,
) -> None:
    """Given a prediction that never finishes and a worker following it, when its job is canceled, then the worker
    cancels the prediction at Replicate and lets the job go, nothing stored."""
    model_id = await sdxl_model_id(graphql)
    generation = await start_generation()
    fake_replicate_server.behave(polls_before_done=1_000_000)
    job = await generate_image(graphql, alice, "an endless render", model_id)

    async def following() -> str | None:
        row = await job_row(pool, job["id"])
        return row["provider_request_id"] if row["provider_status"] is not None else None

    prediction_id = await eventually(following, "the worker follows the prediction")
    assert fake_replicate_server.cancelled == []

    body = await graphql(CANCEL, {"id": job["id"]}, user=alice)

    assert "errors" not in body and body["data"]["cancelJob"]["status"] == "CANCELED", body
    await eventually(lambda: _value(fake_replicate_server.cancelled == [prediction_id]), "Replicate saw the cancel")
    await eventually(lambda: _value(not any(w.running_jobs for w in generation.workers)), "the worker let go")
    canceled = await get_job(graphql, alice, job["id"])
    assert canceled["status"] == "CANCELED" and canceled["workspaceAsset"] is None
    assert ("POST", f"/v1/predictions/{prediction_id}/cancel") in fake_replicate_server.paths
    assert len(fake_replicate_server.creations) == 1


async def test_a_worker_killed_mid_prediction_is_resumed_by_the_next_without_paying_twice(
    graphql: GraphQL, start_generation: StartGeneration, fake_replicate_server: FakeReplicate, pool: asyncpg.Pool,
    settings: Settings, alice: uuid.UUID, tmp_path: Path,
) -> None:
    """Given a `portraits worker` process following a prediction (with a seed it drew) that does not finish, when it
    is SIGKILLed, then the worker that takes the job over resumes that prediction: the job completes on its second
    attempt, Replicate saw exactly one creation, and the character's locked seed is the one the prediction used."""
    model_id = await sdxl_model_id(graphql)
    fake_replicate_server.behave(polls_before_done=1_000_000)
    character = await create_character(graphql, alice)
    job = await generate_portrait(graphql, alice, characterId=character["id"], modelId=model_id)
    process = start_worker_process(
        settings, tmp_path, JOB_LEASE_SECONDS=str(LEASE_SECONDS),
        REPLICATE_API_TOKEN=fake_replicate_server.token, REPLICATE_API_URL=fake_replicate_server.url,
        REPLICATE_POLL_SECONDS="0.05",
    )
    try:
        async def created() -> str | None:
            row = await job_row(pool, job["id"])
            return row["provider_request_id"] if fake_replicate_server.calls["get"] >= 2 else None

        prediction_id = await eventually(created, "the worker process created the prediction and polls it")
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (await job_row(pool, job["id"]))["status"] == "processing"

    # the prediction finishes meanwhile; another worker takes the job over once the dead one's lease runs out
    fake_replicate_server.behave(polls_before_done=0)
    await start_generation(lease_seconds=LEASE_SECONDS)
    done = await wait_for_job(graphql, alice, job["id"], status=("COMPLETED", "FAILED"))

    assert done["status"] == "COMPLETED" and done["attempts"] == 2, done
    assert [attempt["outcome"] for attempt in done["attemptHistory"]] == ["ABANDONED", "COMPLETED"]
    assert fake_replicate_server.calls["create"] == 1 and len(fake_replicate_server.creations) == 1
    assert fake_replicate_server.prediction_ids() == [prediction_id]
    assert (await job_row(pool, job["id"]))["provider_request_id"] == prediction_id
    assert done["libraryAsset"]["path"] == f"user-library/{alice}/{job['id']}_{character['id']}.png"
    seed_used = fake_replicate_server.creations[0]["input"]["seed"]
    assert done["seed"] == done["workspaceAsset"]["seed"] == seed_used
    assert (await get_character(graphql, alice, character["id"]))["seedLocked"] == seed_used


async def _value(value: Any) -> Any:
    return value
