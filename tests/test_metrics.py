"""/metrics, /livez and /readyz of real apps: a real database, moto's S3 over HTTP, real workers and websockets."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families

from pipeline.worker import WorkerConfig
from server.app import create_app
from server.cli import uvicorn_config
from server.metrics import MAX_OPERATION_NAMES, OTHER, Metrics
from server.settings import Settings
from storage.enums import JobAttemptOutcome, JobStatus, Provider
from storage.objects.local import SIGN_ROUTE
from tests.conftest import GraphQL, graphql_over, s3_environ, token_for
from tests.generation_support import create_character, generate_portrait, wait_for_job
from tests.realtime_support import GraphQLSocket, terminate
from tests.server_process import Server
from tests.support import TEST_JWT_SECRET, database_url_for, drop_database, free_port, new_database, serve_uvicorn

METRICS_TOKEN = "scrape-0123456789abcdef"
WAIT_SECONDS = 15.0
EVENTS_LISTEN = "portraits-events-listen"


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` whose labels include ``labels``; 0 when there is none."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(key) == value for key, value in labels.items()):
                total += found.value
    return total


def label_values(text: str, name: str, label: str) -> set[str]:
    return {
        found.labels[label]
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == name and label in found.labels
    }


async def scrape(client: httpx.AsyncClient, **headers: str) -> str:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def scraped(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    return sample(await scrape(client), name, **labels)


async def eventually(read: Callable[[], Awaitable[float]], expected: float) -> float:
    """``read()`` once it equals ``expected`` (or its last value after WAIT_SECONDS, for the assertion to show)."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while (value := await read()) != expected and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return value


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A fresh app (a registry of its own) through its ASGI interface."""
    async with (
        LifespanManager(create_app(settings)) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver") as client,
    ):
        yield client


# --- requests, operations, errors --------------------------------------------------------------------


async def test_a_query_a_failed_query_and_a_refused_one_are_counted_without_ids(
    settings: Settings, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a fresh app
    async with app_client(settings) as client:
        graphql = graphql_over(client)
        missing = uuid.uuid4()

        # when a query succeeds, one fails (a job that is not there) and one does not validate
        ok = await graphql("query Viewer { viewer { id } }", user=alice)
        failed = await graphql("query FindJob($id: ID!) { job(id: $id) { id } }", {"id": str(missing)}, user=alice)
        refused = await graphql("query Nope { noSuchField }", user=alice)
        broken = await graphql("query Broken { viewer {", user=alice)
        signed = await client.get(f"{SIGN_ROUTE}/user-library/{alice}/secret.png?token=not-a-jwt")
        lost = await client.get(f"/no/such/route/{alice}")
        text = await scrape(client)

    # then each operation is counted by name and outcome, and each error by its code
    assert "errors" not in ok and failed["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert refused["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    operations = "portraits_graphql_operations_total"
    assert sample(text, operations, operation="Viewer", type="query", outcome="ok") == 1
    assert sample(text, operations, operation="FindJob", type="query", outcome="error") == 1
    assert sample(text, operations, operation=OTHER, type="query", outcome="refused") == 1
    assert sample(text, operations, operation=OTHER, type="unknown", outcome="refused") == 1  # did not parse
    assert {"Nope", "Broken"}.isdisjoint(label_values(text, operations, "operation"))  # names never validated
    assert sample(text, "portraits_graphql_errors_total", code=broken["errors"][0]["extensions"]["code"]) == 1
    assert sample(text, "portraits_graphql_errors_total", code="NOT_FOUND") == 1
    assert sample(text, "portraits_graphql_errors_total", code="GRAPHQL_VALIDATION_FAILED") == 1
    # and requests by route template and status, never by raw path: no user id, no token in any label
    assert sample(text, "portraits_http_requests_total", route="/graphql", status="200") == 4
    assert (signed.status_code, lost.status_code) == (400, 404)
    assert sample(text, "portraits_http_requests_total", route=SIGN_ROUTE + "/{bucket}/{path:path}", status="400") == 1
    assert sample(text, "portraits_http_requests_total", route="unmatched", status="404") == 1
    assert str(alice) not in text and str(missing) not in text and "not-a-jwt" not in text


async def test_distinct_operation_names_are_capped(settings: Settings) -> None:
    # given a fresh app
    async with app_client(settings) as client:
        graphql = graphql_over(client)

        # when clients send more distinct (valid) operation names than the cap
        for number in range(MAX_OPERATION_NAMES + 20):
            await graphql(f"query Models{number} {{ imageModels {{ id }} }}")
        text = await scrape(client)

    # then the first names are labels and the rest count as OTHER
    names = label_values(text, "portraits_graphql_operations_total", "operation")
    assert len(names) == MAX_OPERATION_NAMES + 1 and OTHER in names
    assert sample(text, "portraits_graphql_operations_total", operation=OTHER, outcome="ok") == 20


async def test_metrics_need_the_token_when_one_is_set(settings: Settings) -> None:
    # given an app with METRICS_TOKEN
    guarded = replace(settings, metrics=replace(settings.metrics, token=METRICS_TOKEN))
    async with app_client(guarded) as client:
        # when /metrics is scraped without the token, with another, and with it
        anonymous = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer scrape-wrong-token-000"})
        text = await scrape(client, Authorization=f"Bearer {METRICS_TOKEN}")

    # then only the right token reads them
    assert (anonymous.status_code, wrong.status_code) == (401, 401)
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert "portraits_http_requests_total" in text


# --- jobs -----------------------------------------------------------------------------------------------


async def test_a_generation_counts_its_job_its_attempt_by_worker_and_its_times(
    settings: Settings, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given an app running one worker of its own (as `serve` does)
    fast = WorkerConfig(concurrency=2, lease_seconds=10, poll_seconds=0.2, retry_base_seconds=0.05,
                        sweep_interval_seconds=0)
    with_worker = replace(settings, generation=replace(settings.generation, workers=1, worker=fast))
    async with app_client(with_worker) as client:
        graphql: GraphQL = graphql_over(client)

        # when a portrait is generated with the local provider
        character = await create_character(graphql, alice)
        job = await generate_portrait(graphql, alice, characterId=character["id"])
        await wait_for_job(graphql, alice, job["id"], status="COMPLETED")
        worker_id = await pool.fetchval("SELECT worker_id FROM jobs WHERE id = $1", uuid.UUID(job["id"]))
        text = await scrape(client)

    # then the job's transitions, the attempt by its worker, its duration and its wait are counted
    assert sample(text, "portraits_jobs_total", status="processing", provider="local") == 1
    assert sample(text, "portraits_jobs_total", status="completed", provider="local") == 1
    assert sample(text, "portraits_job_attempts_total", worker=worker_id, outcome="completed") == 1
    assert label_values(text, "portraits_job_attempts_total", "worker") == {worker_id}
    assert sample(
        text, "portraits_job_attempt_duration_seconds_count", provider="local", outcome="completed"
    ) == 1
    assert sample(text, "portraits_job_queue_wait_seconds_count", provider="local") == 1
    assert sample(text, "portraits_db_pool_max_connections") == settings.database_pool_size
    assert str(alice) not in text


# --- websockets, subscriptions, LISTEN ------------------------------------------------------------------


async def test_websocket_and_subscription_gauges_follow_open_and_close(settings: Settings, alice: uuid.UUID) -> None:
    # given an app served by uvicorn
    config = uvicorn_config(create_app(settings), host="127.0.0.1", port=free_port(), log_level="warning")
    async with serve_uvicorn(config) as served, httpx.AsyncClient(base_url=served.url("", "http")) as client:

        async def gauge(name: str) -> float:
            return sample(await scrape(client), name)

        before = (await gauge("portraits_websockets_open"), await gauge("portraits_subscriptions_open"))

        # when a client opens a websocket and subscribes
        async with GraphQLSocket.open(served.url("/graphql"), token=token_for(alice)) as socket:
            await socket.subscribe("subscription { portraitJobs { id status } }")
            subscribed = await eventually(lambda: gauge("portraits_subscriptions_open"), 1)
            opened = await gauge("portraits_websockets_open")

        # then both gauges went up, and come back down once it closes
        closed_subscriptions = await eventually(lambda: gauge("portraits_subscriptions_open"), 0)
        closed_sockets = await eventually(lambda: gauge("portraits_websockets_open"), 0)
        text = await scrape(client)

    assert before == (0, 0)
    assert (opened, subscribed) == (1, 1)
    assert (closed_sockets, closed_subscriptions) == (0, 0)
    assert sample(text, "portraits_graphql_operations_total", operation="<anonymous>", outcome="subscribed") == 1


async def test_a_lost_listen_connection_counts_a_reconnect_and_a_resync(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    # given a fresh app, listening for change events
    async with app_client(settings) as client:
        before = await scrape(client)

        # when PostgreSQL terminates its LISTEN connection (every app listening on this database's connection)
        assert await terminate(pool, EVENTS_LISTEN) >= 1

        async def reconnects() -> float:
            return sample(await scrape(client), "portraits_listen_reconnects_total", connection="events")

        # then it reconnects, and counts the reconnect and the resync it sent its subscriptions
        reconnected = await eventually(reconnects, 1)
        resynced = await eventually(lambda: scraped(client, "portraits_event_resyncs_total"), 1)

    assert sample(before, "portraits_listen_reconnects_total") == 0
    assert (reconnected, resynced) == (1, 1)


# --- /livez and /readyz ---------------------------------------------------------------------------------


async def test_readyz_turns_503_naming_the_database_when_it_is_gone(server_url: str, tmp_path: Path) -> None:
    # given an app on a database of its own
    name = await new_database(server_url, prefix="portraits_ready")
    settings = Settings.from_environ(
        {
            "DATABASE_URL": database_url_for(server_url, name),
            "JWT_SECRET": TEST_JWT_SECRET,
            "PORTRAITS_DATA_DIR": str(tmp_path),
            "WORKERS": "0",
        }
    )
    try:
        async with app_client(settings) as client:
            ready = await client.get("/readyz")
            alive = await client.get("/livez")

            # when the database disappears under it (its connections are terminated)
            await drop_database(server_url, name)
            unready = await client.get("/readyz")
            still_alive = await client.get("/livez")
    finally:
        await drop_database(server_url, name)

    # then readiness names the database; liveness, which does no I/O, stays 200
    assert (ready.status_code, ready.json()) == (
        200, {"status": "ready", "checks": {"database": "ok", "objects": "ok"}}
    )
    assert (unready.status_code, unready.json()) == (
        503, {"status": "unavailable", "checks": {"database": "unreachable", "objects": "ok"}}
    )
    assert [alive.status_code, still_alive.status_code] == [200, 200]
    assert alive.json() == {"status": "alive"}


async def test_readyz_turns_503_naming_the_object_store_when_s3_stops(
    settings: Settings, tmp_path: Path
) -> None:
    # given an app whose objects live on an S3 (moto) server of its own
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    stopped = False
    try:
        host, port = moto.get_host_and_port()
        s3_settings = Settings.from_environ(
            {
                "DATABASE_URL": settings.database_url or "",
                "JWT_SECRET": TEST_JWT_SECRET,
                "PORTRAITS_DATA_DIR": str(tmp_path),
                "WORKERS": "0",
                **s3_environ(f"http://{host}:{port}"),
            }
        )
        async with app_client(s3_settings) as client:
            ready = await client.get("/readyz")

            # when the S3 server stops
            moto.stop()
            stopped = True
            unready = await client.get("/readyz")
            alive = await client.get("/livez")
    finally:
        if not stopped:
            moto.stop()

    # then readiness names the object store, the database still answers, and the process is alive
    assert ready.status_code == 200, ready.text
    assert (unready.status_code, unready.json()) == (
        503, {"status": "unavailable", "checks": {"database": "ok", "objects": "unreachable"}}
    )
    assert alive.status_code == 200


async def test_probes_answer_head_as_well(client: httpx.AsyncClient) -> None:
    # given the session's app; when load balancers probe with HEAD; then they get the status without a body
    answers = [await client.head(path) for path in ("/livez", "/readyz", "/metrics")]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert all(answer.content == b"" for answer in answers)


# --- a `portraits worker` process ---------------------------------------------------------------------


async def test_a_worker_process_serves_its_metrics_on_its_port(
    servers: list[Server], tmp_path: Path, database_url: str, graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a real `portraits worker` with METRICS_PORT and METRICS_TOKEN (and no HTTP server of its own)
    port = free_port()
    worker = Server(
        tmp_path, command="worker", DATABASE_URL=database_url, JWT_SECRET=TEST_JWT_SECRET, WORKERS="1",
        WORKER_POLL_SECONDS="0.2", METRICS_PORT=str(port), METRICS_TOKEN=METRICS_TOKEN,
    )
    servers.append(worker)
    banner = await asyncio.to_thread(worker.wait_for, "portraits worker:")

    # when a portrait is generated through the API and that worker runs it
    character = await create_character(graphql, alice)
    job = await generate_portrait(graphql, alice, characterId=character["id"])
    await wait_for_job(graphql, alice, job["id"], status="COMPLETED")
    worker_id = await pool.fetchval("SELECT worker_id FROM jobs WHERE id = $1", uuid.UUID(job["id"]))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as scraper:
        refused = await scraper.get("/metrics")
        text = await scrape(scraper, Authorization=f"Bearer {METRICS_TOKEN}")
    code = await asyncio.to_thread(worker.stop, signal.SIGTERM)

    # then its port shows its own job, attempt and pool, behind the token; and it stops cleanly
    assert f"metrics on http://127.0.0.1:{port}/metrics" in banner
    assert refused.status_code == 401
    assert sample(text, "portraits_jobs_total", status="completed", provider="local") == 1
    assert sample(text, "portraits_job_attempts_total", worker=worker_id, outcome="completed") == 1
    assert sample(text, "portraits_db_pool_max_connections") == 10
    assert sample(text, "portraits_http_requests_total") == 0  # no HTTP server but this one
    assert code == 0



async def test_the_readme_lists_every_metric_with_its_type_and_labels(pool: asyncpg.Pool) -> None:
    # given a fresh registry in which every metric has a sample (the gauges read a real pool)
    metrics = Metrics()
    metrics.request("/graphql", 200)
    metrics.operation("Viewer", "query", "ok")
    metrics.errors(["NOT_FOUND"])
    metrics.job_status(JobStatus.COMPLETED, Provider.LOCAL)
    metrics.attempt_ended("host:1:abc", JobAttemptOutcome.COMPLETED, Provider.LOCAL, 1.0)
    metrics.queue_waited(Provider.LOCAL, 0.1)
    metrics.reconnected("events")
    metrics.resynced()
    metrics.gauges.pool, metrics.gauges.websockets, metrics.gauges.subscriptions = pool, lambda: 0, lambda: 0
    exposed = {
        family.name + ("_total" if family.type == "counter" else ""): (
            family.type, {label for found in family.samples for label in found.labels} - {"le"}
        )
        for family in metrics.registry.collect()
        if family.name.startswith("portraits_")
    }

    # when the README's table of metrics is read
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    listed = {}
    for line in readme.splitlines():
        if line.startswith("| `portraits_"):
            name, kind, labels = (cell.strip() for cell in line.strip("|").split("|")[:3])
            listed[name.strip("`")] = (kind, {label.strip("` ") for label in labels.split(",") if label.strip()})

    # then it names every metric, with its type and labels, and no other
    assert listed == exposed
