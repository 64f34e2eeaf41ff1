"""A PostgreSQL (given by DATABASE_URL) stopped and started again while a generation runs.

Real processes: an embedded PostgreSQL of the test's own (started and stopped
through devtools, so the machine's server is never touched), a `portraits
serve` on it with its worker and the local provider made slow, and websocket
subscribers. The database goes away while the provider renders, so the job's
next write fails; the worker records that once the database is back, instead
of waiting out its 30 s lease, and the job completes soon after.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from devtools.embedded_postgres import EmbeddedPostgres
from tests.conftest import token_for
from tests.realtime_support import JOB_UPDATED, GraphQLSocket, data_of
from tests.server_process import READY, Server
from tests.support import TEST_JWT_SECRET
from tests.test_realtime_processes import CREATE, GENERATE, Received, apost, ws_url

RENDER_MS = 2500  # the local provider's simulated latency: the window the database goes away in
JOB = """query($id: ID!) { job(id: $id) {
    status attempts error attemptHistory { number outcome retryable error }
} }"""


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[EmbeddedPostgres, str]]:
    """A PostgreSQL of this test's own, to stop and start, and its URL; stopped at the end whatever happened."""
    embedded = EmbeddedPostgres(tmp_path / "db", durable=False)
    server = embedded.start()
    try:
        yield embedded, server.dsn
    finally:
        embedded.stop()


def job_state(server: Server, user: uuid.UUID, job_id: str) -> dict[str, Any] | None:
    """The job as the API shows it; None while the API answers SERVICE_UNAVAILABLE (the database is away)."""
    response = httpx.post(
        f"{server.url}/graphql", json={"query": JOB, "variables": {"id": job_id}},
        headers={"Authorization": f"Bearer {token_for(user)}"}, timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    codes = [error["extensions"]["code"] for error in body.get("errors", [])]
    if codes == ["SERVICE_UNAVAILABLE"]:
        return None
    assert not codes, body
    job: dict[str, Any] = body["data"]["job"]
    return job


async def until_status(server: Server, user: uuid.UUID, job_id: str, status: str, timeout: float) -> dict[str, Any]:
    """The job once it has ``status``; fails after ``timeout`` s (a liveness bound, not a benchmark)."""
    async with asyncio.timeout(timeout):
        while True:
            job = await asyncio.to_thread(job_state, server, user, job_id)
            if job is not None and job["status"] == status:
                return job
            await asyncio.sleep(0.05)


def statuses_in(heard: Received) -> list[str]:
    """The job statuses a jobUpdated subscription received, in order (its final ``complete`` aside).

    An event rendered while the database is away may carry a field error (a nested loader refused:
    ``libraryAsset``), which must say SERVICE_UNAVAILABLE; the job's own fields are there.
    """
    statuses = []
    for _, message in heard.messages:
        if message["type"] != "next":
            continue
        codes = {error["extensions"]["code"] for error in message["payload"].get("errors") or []}
        assert codes <= {"SERVICE_UNAVAILABLE"}, message
        statuses.append(message["payload"]["data"]["jobUpdated"]["status"])
    return statuses


@pytest.mark.parametrize(
    "lease_seconds",
    [
        pytest.param(30, id="outage-within-the-lease"),
        # The lease runs out during the outage: when the database is back the worker's claim loop may take the
        # job again before its recording lands; either way it completes once.
        pytest.param(3, id="outage-longer-than-the-lease"),
    ],
)
async def test_a_job_whose_database_restarts_mid_generation_completes_soon_after_it_is_back(
    tmp_path: Path, database: tuple[EmbeddedPostgres, str], servers: list[Server], alice: uuid.UUID,
    lease_seconds: int,
) -> None:
    # given `serve` (its worker inside) on a PostgreSQL we can stop, a slow local provider, a character,
    # and a subscriber to the character's portrait job
    postgres, dsn = database
    data_dir = tmp_path / "app"
    server = Server(
        data_dir, DATABASE_URL=dsn, JWT_SECRET=TEST_JWT_SECRET, WORKERS="1", JOB_LEASE_SECONDS=str(lease_seconds),
        LOCAL_RENDER_LATENCY_MS=str(RENDER_MS), SWEEP_INTERVAL_SECONDS="0",
    )
    servers.append(server)
    await asyncio.to_thread(server.wait_for, READY)
    character_id = (await apost(server, alice, CREATE, {"input": {"name": "Iris", "description": "A map."}}))[
        "createCharacter"
    ]["id"]
    async with GraphQLSocket.open(ws_url(server), token=token_for(alice)) as across, \
            Received.reading(across) as heard:
        job_id = (await apost(server, alice, GENERATE, {"id": character_id}))["generateCharacterPortrait"]["id"]
        await across.subscribe(JOB_UPDATED, {"id": job_id})
        await until_status(server, alice, job_id, "PROCESSING", timeout=30)

        # when PostgreSQL stops while the provider renders, and starts again once the render is over
        await asyncio.to_thread(postgres.stop)
        await asyncio.sleep(RENDER_MS / 1000 + 2)
        await asyncio.to_thread(postgres.start)
        back, back_at = time.monotonic(), time.time()

        # then the job completes within seconds (its lease would have held it for up to 30)
        job = await until_status(server, alice, job_id, "COMPLETED", timeout=15)
        print(f"job completed {time.monotonic() - back:.2f} s after PostgreSQL was back")
        # and the subscriber that stayed connected through the outage gets the final state
        try:
            await heard.until(lambda: "COMPLETED" in statuses_in(heard), timeout=15)
        except TimeoutError:  # (once in CI: the subscription had ended; say what it got)
            pytest.fail(f"the connected subscriber never heard COMPLETED; it got {heard.messages}")
        print(f"the connected subscriber heard COMPLETED {time.monotonic() - back:.2f} s after PostgreSQL was back")

    assert statuses_in(heard)[-1] == "COMPLETED", heard.messages
    # and so does one that connects again
    async with GraphQLSocket.open(ws_url(server), token=token_for(alice)) as again:
        operation = await again.subscribe(JOB_UPDATED, {"id": job_id})
        results = await again.results_until_complete(operation, timeout=15)
    assert data_of(results[-1], "jobUpdated")["status"] == "COMPLETED", results

    # and the outage struck inside the job: its first attempt ended on it (recorded as failed once the database
    # was back, or, past the lease, taken over by a new claim), the second completed
    history = job["attemptHistory"]
    assert [(a["number"], a["outcome"]) for a in history] in (
        [(1, "FAILED"), (2, "COMPLETED")], [(1, "ABANDONED"), (2, "COMPLETED")]
    ), job
    if lease_seconds == 30:
        assert history[0]["outcome"] == "FAILED", history
        assert history[0]["retryable"] is True and "database" in history[0]["error"], history
    output = server.rest_of_output()
    assert "the database became unreachable" in output, output
    assert "could not record" not in output, output

    # and exactly one workspace row and one library row hold it, each with its two objects
    connection = await asyncpg.connect(dsn)
    try:
        job_uuid = uuid.UUID(job_id)
        second = await connection.fetchval(
            "SELECT extract(epoch FROM started_at) FROM job_attempts WHERE job_id = $1 AND number = 2", job_uuid
        )
        print(f"its second attempt started {float(second) - back_at:.2f} s after PostgreSQL was back")
        assert await connection.fetchval("SELECT count(*) FROM workspace_assets WHERE job_id = $1", job_uuid) == 1
        assert await connection.fetchval("SELECT count(*) FROM user_library WHERE user_id = $1", alice) == 1
    finally:
        await connection.close()
    for bucket in ("workspace-temp", "user-library"):
        files = sorted(path.name for path in (data_dir / "objects" / bucket / str(alice)).rglob("*") if path.is_file())
        assert len(files) == 2 and all(name.startswith(job_id) for name in files), (bucket, files)
    assert server.stop(signal.SIGTERM) == 0
