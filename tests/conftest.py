"""Fixtures: a real PostgreSQL, the real app over its real HTTP interface, tokens.

The server is the embedded PostgreSQL 18 (started once per session in a
temporary folder) unless ``TEST_DATABASE_URL`` names another one. Either way
the session gets a database of its own, migrated once, and every test starts
from empty tables.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from devtools.embedded_postgres import EmbeddedPostgres
from pipeline.providers.fal import FalConfig
from pipeline.providers.replicate import ReplicateConfig
from pipeline.service import Generation
from pipeline.worker import WorkerConfig
from server.app import create_app
from server.auth import issue_token
from server.cli import uvicorn_config
from server.settings import Settings
from storage.database import create_pool
from storage.migrate import migrate
from storage.objects.catalog import CatalogedObjectStore
from storage.objects.config import open_object_store
from storage.objects.store import ObjectStore
from tests.fake_fal import FakeFal
from tests.fake_replicate import FakeReplicate
from tests.server_process import Server
from tests.support import (
    TEST_JWT_SECRET,
    database_url_for,
    drop_database,
    free_port,
    new_database,
    request_id_checked,
    serve_uvicorn,
)

DATA_TABLES = ("user_library", "workspace_assets", "jobs", "characters", "stored_objects")
TRUNCATE = f"TRUNCATE {', '.join(DATA_TABLES)} CASCADE"
TRUNCATE_LOCK_WAIT = "10s"
LOCK_HOLDERS = """
SELECT DISTINCT a.pid, a.application_name, a.state, a.wait_event, now() - a.xact_start AS held_for,
       left(a.query, 200) AS query
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.relation = ANY($1::regclass[]) AND l.granted AND a.pid <> pg_backend_pid()
"""


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server's admin URL: TEST_DATABASE_URL, or an embedded one for this session."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    root = Path(tempfile.mkdtemp(prefix="portraits-test-pg-"))
    embedded = EmbeddedPostgres(root, database="postgres", durable=False)
    server = embedded.start()
    try:
        yield server.dsn
    finally:
        embedded.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """A migrated database of this session's own, dropped at the end."""
    name = await new_database(server_url, prefix="portraits_test")
    url = database_url_for(server_url, name)
    await migrate(url)
    try:
        yield url
    finally:
        await drop_database(server_url, name)


@pytest.fixture(scope="session")
def fake_fal_server() -> Iterator[FakeFal]:
    """One fake fal.ai queue server per session, over real HTTP on 127.0.0.1 (tests/fake_fal.py)."""
    with FakeFal() as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_replicate_server() -> Iterator[FakeReplicate]:
    """One fake Replicate API server per session, over real HTTP on 127.0.0.1 (tests/fake_replicate.py)."""
    with FakeReplicate() as fake:
        yield fake


@pytest.fixture(scope="session")
def settings(
    database_url: str,
    fake_fal_server: FakeFal,
    fake_replicate_server: FakeReplicate,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    return Settings.from_environ(
        {
            "DATABASE_URL": database_url,
            # fal and Replicate models are offered (the app's job policy allows them); test workers call the fakes.
            "FAL_KEY": fake_fal_server.key,
            "FAL_QUEUE_URL": fake_fal_server.url,
            "REPLICATE_API_TOKEN": fake_replicate_server.token,
            "REPLICATE_API_URL": fake_replicate_server.url,
            # The fake serves its results on 127.0.0.1, which downloads reach only when allowed.
            "DOWNLOAD_ALLOW_NETWORKS": "127.0.0.1",
            "JWT_SECRET": TEST_JWT_SECRET,
            "PORTRAITS_DATA_DIR": str(tmp_path_factory.mktemp("data")),
            "PUBLIC_URL": "http://testserver",
            # Tests run workers of their own (tests/test_generation*.py), never in the background of others.
            "WORKERS": "0",
            # Plans on (the default) unless the run says otherwise: CI runs the GraphQL tests with them off too.
            "EXECUTION_PLANS": os.environ.get("EXECUTION_PLANS", "on"),
        }
    )


@pytest.fixture(scope="session")
async def app_manager(settings: Settings) -> AsyncIterator[LifespanManager]:
    async with LifespanManager(create_app(settings)) as manager:
        yield manager


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """``Server`` subprocesses a test starts; killed at its end if still running."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


@pytest.fixture(scope="session")
async def live_server(settings: Settings) -> AsyncIterator[str]:
    """The app served by a real uvicorn on a free port, in the tests' event loop; its websocket URL.

    httpx's ASGI transport speaks no websockets, so subscriptions are tested
    against this, as clients reach them. The app is a second one on the same
    database, beside ``client``'s (as two server processes would be).
    """
    config = uvicorn_config(create_app(settings), host="127.0.0.1", port=free_port(), log_level="warning")
    async with serve_uvicorn(config) as served:
        yield served.url("/graphql")


@pytest.fixture(scope="session")
async def client(app_manager: LifespanManager) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app through its ASGI interface (lifespan included)."""
    transport = httpx.ASGITransport(app=app_manager.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool of the tests' own, to check what was really stored."""
    test_pool = await create_pool(database_url, max_size=4)
    try:
        yield test_pool
    finally:
        await test_pool.close()


@pytest.fixture(autouse=True)
async def empty_tables(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Tests that touch the database start from empty tables (image_models keeps its seed rows)."""
    if "pool" not in request.fixturenames and "graphql" not in request.fixturenames:
        yield
        return
    test_pool: asyncpg.Pool = request.getfixturevalue("pool")
    async with test_pool.acquire() as connection:
        try:
            async with connection.transaction():
                await connection.execute(f"SET LOCAL lock_timeout = '{TRUNCATE_LOCK_WAIT}'")
                await connection.execute(TRUNCATE)
        except asyncpg.LockNotAvailableError:
            # Sessions still holding the data tables after a test has ended are a leak (twice in CI: pooled
            # connections left mid-statement by cancelled tasks, fixed in storage/database.py). Name them in a
            # failure of this test, and end them so the tests after it start clean.
            holders = [dict(h) for h in await connection.fetch(LOCK_HOLDERS, list(DATA_TABLES))]
            await connection.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid",
                                     [h["pid"] for h in holders])
            pytest.fail(f"the data tables were still locked when this test started, by {holders}; terminated")
    yield


GraphQL = Callable[..., Awaitable[dict[str, Any]]]


def graphql_over(client: httpx.AsyncClient) -> GraphQL:
    """POST a query to /graphql as ``user`` (a UUID, or None for no token); returns the JSON body.

    ``status`` is the expected HTTP status (200 unless said otherwise).
    """

    async def execute(
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        user: uuid.UUID | None = None,
        headers: dict[str, str] | None = None,
        status: int = 200,
    ) -> dict[str, Any]:
        all_headers = dict(headers or {})
        if user is not None:
            all_headers["Authorization"] = f"Bearer {token_for(user)}"
        response = await client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=all_headers
        )
        assert response.status_code == status, response.text
        body: dict[str, Any] = request_id_checked(response.json(), response.headers)
        return body

    return execute


@contextlib.asynccontextmanager
async def graphql_logging_statements(settings: Settings) -> AsyncIterator[tuple[GraphQL, list[str]]]:
    """A fresh app that logs every SQL statement it runs, for tests that count round trips."""
    statements: list[str] = []
    async with LifespanManager(
        create_app(settings, query_logger=lambda logged: statements.append(logged.query))
    ) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield graphql_over(http), statements


@pytest.fixture
def graphql(client: httpx.AsyncClient, pool: asyncpg.Pool) -> GraphQL:
    """The app on the local object store, through ``graphql_over``."""
    return graphql_over(client)


def token_for(user: uuid.UUID, *, ttl: timedelta = timedelta(hours=1)) -> str:
    return issue_token(TEST_JWT_SECRET, user, ttl=ttl)


@pytest.fixture
def alice() -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture
def bob() -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 in server mode on 127.0.0.1: real HTTP, real SigV4 requests, no patching."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_environ(endpoint: str) -> dict[str, str]:
    """S3 settings with buckets of their own (a random prefix), so stores never see each other's objects."""
    return {
        "S3_ENDPOINT_URL": endpoint,
        "S3_REGION": "us-east-1",
        "S3_BUCKET_PREFIX": f"t{uuid.uuid4().hex[:10]}-",
        "AWS_ACCESS_KEY_ID": "testing-key",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
    }


@pytest.fixture(scope="session")
def s3_settings(settings: Settings, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The test settings with objects on S3 (moto) instead of the local folder."""
    return Settings.from_environ(
        {
            "DATABASE_URL": settings.database_url or "",
            "JWT_SECRET": TEST_JWT_SECRET,
            "PORTRAITS_DATA_DIR": str(tmp_path_factory.mktemp("data-s3")),
            "PUBLIC_URL": "http://testserver",
            "WORKERS": "0",
            "FAL_KEY": settings.generation.fal.key if settings.generation.fal else "",
            "FAL_QUEUE_URL": settings.generation.fal.queue_url if settings.generation.fal else "",
            "DOWNLOAD_ALLOW_NETWORKS": "127.0.0.1",
            "EXECUTION_PLANS": os.environ.get("EXECUTION_PLANS", "on"),
            **s3_environ(s3_endpoint),
        }
    )


@pytest.fixture(scope="session")
async def s3_client(s3_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Like ``client``, for an app whose objects live on S3."""
    async with LifespanManager(create_app(s3_settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


@pytest.fixture(scope="session")
async def local_store(settings: Settings) -> AsyncIterator[ObjectStore]:
    """The app's own local store (same folder, same signing key), so its URLs are served by the app."""
    store = await open_object_store(settings.objects)
    yield store
    await store.close()


@pytest.fixture(scope="session")
async def s3_store(s3_settings: Settings) -> AsyncIterator[ObjectStore]:
    """An S3 store on the same buckets as the S3-backed app."""
    store = await open_object_store(s3_settings.objects)
    yield store
    await store.close()


@pytest.fixture(params=["local", "s3"])
def object_store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each contract test runs once per backend."""
    store: ObjectStore = request.getfixturevalue(f"{request.param}_store")
    return store


@pytest.fixture
def fetch(client: httpx.AsyncClient) -> Callable[..., Awaitable[httpx.Response]]:
    """GET a URL as a browser would: the app's own URLs through the app, S3 URLs over the network."""

    async def get(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        if url.startswith("http://testserver/"):
            return await client.get(url, headers=headers)
        async with httpx.AsyncClient() as network:
            return await network.get(url, headers=headers)

    return get


StartGeneration = Callable[..., Awaitable[Generation]]


@pytest.fixture
async def start_generation(
    settings: Settings,
    s3_settings: Settings,
    pool: asyncpg.Pool,
    fake_fal_server: FakeFal,
    fake_replicate_server: FakeReplicate,
) -> AsyncIterator[StartGeneration]:
    """Start workers of the test's own on the test database, like a `portraits worker` process.

    ``store`` is "local" (the app's own folder) or "s3" (the S3-backed app's
    buckets); keyword overrides go to WorkerConfig and PipelineConfig, ``fal_timeout`` and
    ``fal_request_timeout`` to FalConfig (a whole request, one HTTP call), ``fal_poll_interval`` and
    ``fal_webhook_url`` too, and ``replicate_poll_interval``/``replicate_webhook_url`` to ReplicateConfig
    (PROVIDER_WEBHOOKS: tests/test_provider_webhooks.py). Retries
    and polls are fast; fal calls go to the fake fal server, Replicate calls to the fake Replicate server
    (``replicate_timeout`` is ReplicateConfig's whole-request budget). Everything started is stopped when the
    test ends.
    """
    fake_fal_server.reset()
    fake_replicate_server.reset()
    started: list[tuple[Generation, ObjectStore]] = []

    async def start(
        store: str = "local",
        *,
        workers: int = 1,
        local_latency: float = 0.0,
        fal_timeout: float = 30.0,
        fal_request_timeout: float = 30.0,
        replicate_timeout: float = 30.0,
        fal_poll_interval: float = 0.01,
        fal_webhook_url: str | None = None,
        replicate_poll_interval: float = 0.01,
        replicate_webhook_url: str | None = None,
        **overrides: Any,
    ) -> Generation:
        app_settings = settings if store == "local" else s3_settings
        worker_fields = {name for name in WorkerConfig.__dataclass_fields__}
        worker = replace(
            WorkerConfig(
                concurrency=4, lease_seconds=10, poll_seconds=0.5, retry_base_seconds=0.05, sweep_interval_seconds=0
            ),
            **{key: value for key, value in overrides.items() if key in worker_fields},
        )
        pipeline = replace(
            app_settings.generation.pipeline,
            **{key: value for key, value in overrides.items() if key not in worker_fields},
        )
        fal = FalConfig(
            key=fake_fal_server.key, queue_url=fake_fal_server.url, poll_interval=fal_poll_interval,
            timeout=fal_timeout, request_timeout=fal_request_timeout, webhook_url=fal_webhook_url,
        )
        replicate = ReplicateConfig(
            token=fake_replicate_server.token, api_url=fake_replicate_server.url, poll_interval=replicate_poll_interval,
            timeout=replicate_timeout, webhook_url=replicate_webhook_url,
        )
        generation_settings = replace(
            app_settings.generation, worker=worker, pipeline=pipeline, fal=fal, replicate=replicate,
            local_latency_seconds=local_latency,
        )
        store_object = await open_object_store(app_settings.objects)
        objects = CatalogedObjectStore(store_object, pool)
        generation = await Generation.start(
            generation_settings, dsn=settings.database_url or "", pool=pool, objects=objects, workers=workers
        )
        started.append((generation, store_object))
        return generation

    yield start
    for generation, store_object in started:
        await generation.stop()
        await store_object.close()
