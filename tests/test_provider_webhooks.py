"""POST /webhooks/fal and /webhooks/replicate on a real server: verified, bounded, idempotent, and only waking.

The app runs under uvicorn with PROVIDER_WEBHOOKS on, fal's keys come from a
JWKS the tests serve over HTTP, and the fake fal (tests/fake_fal.py) calls
the webhook URL its submits carried, signed with the tests' key, when a
request finishes.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import httpx
import pytest

from pipeline.signals import PROVIDER_DONE_CHANNEL
from server.app import create_app
from server.cli import uvicorn_config
from server.settings import Settings
from server.webhooks import FAL_PATH, REPLICATE_PATH, WebhookSettings
from tests.conftest import StartGeneration
from tests.fake_fal import FakeFal
from tests.fake_replicate import SDXL_MODEL, FakeReplicate
from tests.generation_support import CANCEL, FAL_MODEL, GENERATE_IMAGE, WAIT_SECONDS, GraphQL, wait_for_job
from tests.jwks_support import JwksServer
from tests.support import error_codes, free_port, serve_uvicorn
from tests.test_worker_wakeup import listening_backends
from tests.webhook_support import FalSigner, StandardSigner, fal_body, replicate_signer

MAX_BODY = 8 * 1024
# fal's status poll interval in these tests; with webhooks on, polls are five times further apart (5 s).
POLL_SECONDS = 1.0
# How long a fake fal request runs before it is done (and its webhook goes).
RUN_SECONDS = 0.5
# Long enough that a notification sent would have arrived.
QUIET_SECONDS = 0.3


@dataclass
class WebhookServer:
    url: str
    fal: FalSigner
    jwks: JwksServer
    replicate: StandardSigner

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        async with httpx.AsyncClient() as http:
            return await http.post(f"{self.url}{path}", content=body, headers=headers)


@pytest.fixture
async def webhook_server(
    settings: Settings, fake_fal_server: FakeFal, fake_replicate_server: FakeReplicate
) -> AsyncIterator[WebhookServer]:
    """The app with PROVIDER_WEBHOOKS on, served on a real port (its PUBLIC_URL); the fakes sign their calls."""
    fal = FalSigner.new("fal-webhook-key")
    replicate = replicate_signer()
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    async with JwksServer.running([fal.public_jwk]) as jwks:
        webhook_settings = replace(
            settings,
            public_url=public_url,
            webhooks=WebhookSettings(
                enabled=True, public_url=public_url, fal_jwks_url=jwks.url, replicate_secret=replicate.secret,
                max_body_bytes=MAX_BODY,
            ),
        )
        config = uvicorn_config(create_app(webhook_settings), host="127.0.0.1", port=port, log_level="warning")
        fake_fal_server.webhook_signer = fal
        fake_replicate_server.webhook_signer = replicate
        try:
            async with serve_uvicorn(config):
                yield WebhookServer(public_url, fal, jwks, replicate)
        finally:
            fake_fal_server.webhook_signer = None
            fake_replicate_server.webhook_signer = None


@asynccontextmanager
async def provider_done_notifications(database_url: str) -> AsyncIterator[list[str]]:
    """Every NOTIFY on the workers' provider-done channel while the block runs."""
    connection = await asyncpg.connect(database_url)
    heard: list[str] = []
    await connection.add_listener(PROVIDER_DONE_CHANNEL, lambda *args: heard.append(args[3]))
    try:
        yield heard
    finally:
        await connection.close()


async def fal_model_id(graphql: GraphQL) -> str:
    body = await graphql("{ imageModels { id modelKey } }")
    (model,) = [model for model in body["data"]["imageModels"] if model["modelKey"] == FAL_MODEL]
    return str(model["id"])


async def generate_image(graphql: GraphQL, user: uuid.UUID, model_id: str) -> dict[str, Any]:
    body = await graphql(GENERATE_IMAGE, {"input": {"prompt": "a lighthouse at dusk", "modelId": model_id}}, user=user)
    assert "errors" not in body, body
    job: dict[str, Any] = body["data"]["generateImage"]
    return job


async def model_id(graphql: GraphQL, model_key: str) -> str:
    body = await graphql("{ imageModels { id modelKey } }")
    (model,) = [model for model in body["data"]["imageModels"] if model["modelKey"] == model_key]
    return str(model["id"])


async def request_id_of(pool: asyncpg.Pool, job_id: str) -> str:
    """The fal request id once the worker has recorded it."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = await pool.fetchval("SELECT provider_request_id FROM jobs WHERE id = $1", uuid.UUID(job_id))
        if value is not None:
            return str(value)
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} never recorded a request id")


async def cancel(graphql: GraphQL, user: uuid.UUID, job_id: str) -> None:
    """A job left running would go back to the queue when the test's workers stop, for a later test's to run."""
    body = await graphql(CANCEL, {"id": job_id}, user=user)
    assert body["data"]["cancelJob"]["status"] == "CANCELED", body


async def until(check: Any, what: str, seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)


# --- refusals ---------------------------------------------------------------------------------


async def test_a_call_signed_with_a_key_fal_never_published_is_refused_with_401(
    webhook_server: WebhookServer, database_url: str
) -> None:
    """Given the fal webhook, when a call signed by another key arrives, then 401 with a JSON error, and no wake."""
    request_id = str(uuid.uuid4())
    body = fal_body(request_id)
    async with provider_done_notifications(database_url) as heard:
        answer = await webhook_server.post(FAL_PATH, body, FalSigner.new("fal-webhook-key").headers(request_id, body))
        await asyncio.sleep(QUIET_SECONDS)

    assert answer.status_code == 401
    assert error_codes(answer.json()) == ["UNAUTHENTICATED"]
    assert heard == []


async def test_a_stale_call_is_refused_with_401(webhook_server: WebhookServer) -> None:
    """Given the fal webhook, when a correctly signed call is six minutes old, then 401."""
    request_id = str(uuid.uuid4())
    body = fal_body(request_id)
    headers = webhook_server.fal.headers(request_id, body, timestamp=int(time.time()) - 360)

    answer = await webhook_server.post(FAL_PATH, body, headers)

    assert answer.status_code == 401


async def test_an_oversized_body_is_refused_with_413_before_it_is_verified(webhook_server: WebhookServer) -> None:
    """Given a body cap, when a (validly signed) call passes it, then 413 with a JSON error."""
    request_id = str(uuid.uuid4())
    body = fal_body(request_id, image_url="https://example.invalid/" + "x" * MAX_BODY)

    answer = await webhook_server.post(FAL_PATH, body, webhook_server.fal.headers(request_id, body))

    assert answer.status_code == 413
    assert error_codes(answer.json()) == ["PAYLOAD_TOO_LARGE"]


async def test_the_replicate_webhook_checks_its_standard_signature(webhook_server: WebhookServer) -> None:
    """Given REPLICATE_WEBHOOK_SECRET, when a prediction call signed with it arrives, then 204; with another, 401."""
    body = b'{"id": "rp-unknown", "status": "succeeded", "output": ["https://example.invalid/x.png"]}'

    good = await webhook_server.post(REPLICATE_PATH, body, webhook_server.replicate.headers("msg_a", body))
    bad = await webhook_server.post(REPLICATE_PATH, body, replicate_signer().headers("msg_a", body))

    assert good.status_code == 204
    assert bad.status_code == 401
    assert error_codes(bad.json()) == ["UNAUTHENTICATED"]


# --- what a verified call does ---------------------------------------------------------------


async def test_a_verified_call_for_an_unknown_request_is_answered_204_without_effect(
    webhook_server: WebhookServer, database_url: str
) -> None:
    """Given no job holds a request id, when fal calls for it, then 204 (no retry is worth it) and no wake."""
    request_id = str(uuid.uuid4())
    body = fal_body(request_id)
    async with provider_done_notifications(database_url) as heard:
        answer = await webhook_server.post(FAL_PATH, body, webhook_server.fal.headers(request_id, body))
        await asyncio.sleep(QUIET_SECONDS)

    assert answer.status_code == 204
    assert heard == []


async def test_a_call_wakes_the_polling_worker_which_asks_fal_itself_and_a_replay_does_nothing(
    webhook_server: WebhookServer,
    graphql: GraphQL,
    pool: asyncpg.Pool,
    start_generation: StartGeneration,
    fake_fal_server: FakeFal,
    database_url: str,
    alice: uuid.UUID,
) -> None:
    """Given a worker waiting (5 s between polls) on a fal request that is still running, when a validly signed
    call says it is done, then the worker asks fal at once, hears it is still running, and keeps waiting: the call
    woke it, and did not complete the job. When the same delivery comes again, then nothing happens."""
    await start_generation(fal_poll_interval=POLL_SECONDS, fal_webhook_url=f"{webhook_server.url}{FAL_PATH}")
    fake_fal_server.behave(run_seconds=60)
    job = await generate_image(graphql, alice, await fal_model_id(graphql))
    request_id = await request_id_of(pool, job["id"])
    await asyncio.sleep(0.2)
    assert fake_fal_server.calls["status"] == 0  # waiting for the webhook (or the slow poll)
    body = fal_body(request_id)
    headers = webhook_server.fal.headers(request_id, body)

    async with provider_done_notifications(database_url) as heard:
        first = await webhook_server.post(FAL_PATH, body, headers)
        await until(lambda: fake_fal_server.calls["status"] == 1, "the woken worker asking fal", seconds=2)
        again = await webhook_server.post(FAL_PATH, body, headers)
        await asyncio.sleep(QUIET_SECONDS)

    assert (first.status_code, again.status_code) == (204, 204)
    assert heard == [f"fal:{request_id}"]
    assert fake_fal_server.calls["status"] == 1
    assert fake_fal_server.calls["result"] == 0
    status = await pool.fetchval("SELECT status FROM jobs WHERE id = $1", uuid.UUID(job["id"]))
    assert status == "processing"
    await cancel(graphql, alice, job["id"])


async def test_a_late_call_for_a_finished_job_changes_nothing(
    webhook_server: WebhookServer,
    graphql: GraphQL,
    pool: asyncpg.Pool,
    start_generation: StartGeneration,
    fake_fal_server: FakeFal,
    database_url: str,
    alice: uuid.UUID,
) -> None:
    """Given a fal job that completed, when fal calls (again) for its request, then 204, no wake, and the row
    is unchanged."""
    await start_generation()
    fake_fal_server.behave(polls_before_done=1)
    job = await generate_image(graphql, alice, await fal_model_id(graphql))
    await wait_for_job(graphql, alice, job["id"], status="COMPLETED")
    before = await pool.fetchrow("SELECT * FROM jobs WHERE id = $1", uuid.UUID(job["id"]))
    assert before is not None
    request_id = before["provider_request_id"]
    body = fal_body(request_id)

    async with provider_done_notifications(database_url) as heard:
        answer = await webhook_server.post(FAL_PATH, body, webhook_server.fal.headers(request_id, body))
        await asyncio.sleep(QUIET_SECONDS)

    assert answer.status_code == 204
    assert heard == []
    assert await pool.fetchrow("SELECT * FROM jobs WHERE id = $1", uuid.UUID(job["id"])) == before


# --- the point: completion latency with webhooks on and off ----------------------------------


async def completion_latencies(
    graphql: GraphQL, pool: asyncpg.Pool, fake: FakeFal, user: uuid.UUID, jobs: int
) -> list[float]:
    """Seconds from the fake fal finishing each job's request to the job's completed_at."""
    model_id = await fal_model_id(graphql)
    created = [await generate_image(graphql, user, model_id) for _ in range(jobs)]
    latencies = []
    for job in created:
        done = await wait_for_job(graphql, user, job["id"], status="COMPLETED")
        row = await pool.fetchrow(
            "SELECT provider_request_id, completed_at FROM jobs WHERE id = $1", uuid.UUID(done["id"])
        )
        assert row is not None
        latencies.append(row["completed_at"].timestamp() - fake.finished_at[row["provider_request_id"]])
    return latencies


@pytest.mark.parametrize("webhooks", ["on", "off"])
async def test_a_webhook_completes_the_job_well_before_the_next_poll(
    webhooks: str,
    webhook_server: WebhookServer,
    graphql: GraphQL,
    pool: asyncpg.Pool,
    start_generation: StartGeneration,
    fake_fal_server: FakeFal,
    alice: uuid.UUID,
) -> None:
    """Given fal requests that run 0.5 s and a 1 s poll interval (5 s with webhooks on), when they finish, then with
    webhooks the jobs complete within a fraction of a second (well before the next poll, 4.5 s later), with three
    fal requests each (submit, status, result) and the result fetched from fal, not the call's body; without,
    within a poll."""
    on = webhooks == "on"
    await start_generation(
        fal_poll_interval=POLL_SECONDS, fal_webhook_url=f"{webhook_server.url}{FAL_PATH}" if on else None
    )
    fake_fal_server.behave(run_seconds=RUN_SECONDS)
    jobs = 3

    latencies = await completion_latencies(graphql, pool, fake_fal_server, alice, jobs)

    asked = [fake_fal_server.first_asked_done_at[rid] - done for rid, done in fake_fal_server.finished_at.items()]
    print(
        f"\nwebhooks {webhooks}: provider finished -> job completed: "
        f"median {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; "
        f"-> fal asked: median {statistics.median(asked) * 1000:.0f} ms "
        f"({jobs} jobs, fal polled every {POLL_SECONDS * (5 if on else 1):g} s)"
    )
    if on:
        # The first poll was 5 s after the submit, 4.5 s after fal finished: half of it is far from it, and
        # generous on a loaded machine (a quiet one measures about 0.1 s).
        assert max(latencies) < POLL_SECONDS * 5 / 2
        assert sorted(status for _, status in fake_fal_server.webhook_answers) == [204] * jobs
        assert (fake_fal_server.calls["submit"], fake_fal_server.calls["status"], fake_fal_server.calls["result"]) == (
            jobs, jobs, jobs
        )
        assert fake_fal_server.webhook_urls == [f"{webhook_server.url}{FAL_PATH}"] * jobs
    else:
        assert max(latencies) < POLL_SECONDS + 1.0
        assert fake_fal_server.webhook_urls == []
    # the image came from fal's result (the fake's file server), never from the call's body (a URL never served)
    assert fake_fal_server.calls["file"] == jobs


async def test_a_worker_whose_listen_connection_was_lost_asks_fal_once_it_is_back(
    webhook_server: WebhookServer,
    pool: asyncpg.Pool,
    graphql: GraphQL,
    start_generation: StartGeneration,
    fake_fal_server: FakeFal,
    alice: uuid.UUID,
) -> None:
    """Given a worker waiting 20 s between polls for its webhook, when its LISTEN connection is killed (a webhook's
    notification sent meanwhile would be lost), then once it listens again it asks fal at once."""
    await start_generation(fal_poll_interval=4.0, fal_webhook_url=f"{webhook_server.url}{FAL_PATH}")
    fake_fal_server.behave(run_seconds=60)
    job = await generate_image(graphql, alice, await fal_model_id(graphql))
    await request_id_of(pool, job["id"])
    assert fake_fal_server.calls["status"] == 0
    (backend,) = await listening_backends(pool)

    await pool.execute("SELECT pg_terminate_backend($1)", backend)

    await until(lambda: fake_fal_server.calls["status"] == 1, "a poll after the LISTEN came back", seconds=10)
    await cancel(graphql, alice, job["id"])


@pytest.mark.parametrize("webhooks", ["on", "off"])
async def test_a_replicate_webhook_completes_the_job_well_before_the_next_poll(
    webhooks: str,
    webhook_server: WebhookServer,
    graphql: GraphQL,
    pool: asyncpg.Pool,
    start_generation: StartGeneration,
    fake_replicate_server: FakeReplicate,
    alice: uuid.UUID,
) -> None:
    """Given SDXL predictions that run 0.5 s and a 1 s poll interval (5 s with webhooks on), when they succeed,
    then with webhooks (created with webhook and webhook_events_filter ["completed"], the call signed with the
    Standard Webhooks secret) the jobs complete well before the next poll, with two Replicate requests each
    (create, one get); without, within a poll."""
    on = webhooks == "on"
    url = f"{webhook_server.url}{REPLICATE_PATH}"
    await start_generation(replicate_poll_interval=POLL_SECONDS, replicate_webhook_url=url if on else None)
    fake_replicate_server.behave(run_seconds=RUN_SECONDS)
    sdxl = await model_id(graphql, SDXL_MODEL)
    jobs = 3
    created = [await generate_image(graphql, alice, sdxl) for _ in range(jobs)]

    latencies = []
    for job in created:
        await wait_for_job(graphql, alice, job["id"], status="COMPLETED")
        row = await pool.fetchrow(
            "SELECT provider_request_id, completed_at FROM jobs WHERE id = $1", uuid.UUID(job["id"])
        )
        assert row is not None
        finished = fake_replicate_server.finished_at[row["provider_request_id"]]
        latencies.append(row["completed_at"].timestamp() - finished)

    print(
        f"\nreplicate, webhooks {webhooks}: prediction succeeded -> job completed: "
        f"median {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms "
        f"({jobs} jobs, polled every {POLL_SECONDS * (5 if on else 1):g} s)"
    )
    if on:
        assert max(latencies) < POLL_SECONDS * 5 / 2
        assert [(body["webhook"], body["webhook_events_filter"]) for body in fake_replicate_server.creations] == [
            (url, ["completed"])
        ] * jobs
        assert sorted(status for _, status in fake_replicate_server.webhook_answers) == [204] * jobs
        assert (fake_replicate_server.calls["create"], fake_replicate_server.calls["get"]) == (jobs, jobs)
    else:
        assert max(latencies) < POLL_SECONDS + 1.0
        assert all("webhook" not in body for body in fake_replicate_server.creations)
