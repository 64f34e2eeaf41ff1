"""/healthz answers for the database: 200 while it answers, 503 once it is gone, whatever the pool's load."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp, Receive, Scope, Send

from server.app import create_app
from server.settings import Settings
from tests.support import TEST_JWT_SECRET, database_url_for, drop_database, new_database

# Generous: a check that answers at all within this did not queue behind the pool (which waits 10 s).
HEALTHZ_WITHIN_SECONDS = 5.0
HEALTH_APPLICATION = "portraits-health"


class LifespanState:
    """The app, keeping what its lifespan yields (ASGI's lifespan ``scope["state"]``): a test reaches its pool."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            self.state = scope["state"]
        await self.app(scope, receive, send)


@dataclass
class HealthApp:
    client: httpx.AsyncClient
    pool: asyncpg.Pool  # the app's own pool
    server_url: str
    database: str

    async def health_backends(self) -> list[int]:
        """The pids of the health connections PostgreSQL has open on this app's database."""
        admin = await asyncpg.connect(self.server_url)
        try:
            rows = await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
                self.database,
                HEALTH_APPLICATION,
            )
        finally:
            await admin.close()
        return [row["pid"] for row in rows]


@asynccontextmanager
async def health_app(server_url: str, tmp_path: Path, *, pool_size: int = 10) -> AsyncIterator[HealthApp]:
    """An app on a database of its own, with an HTTP client through its ASGI interface."""
    name = await new_database(server_url, prefix="portraits_health")
    settings = Settings.from_environ(
        {
            "DATABASE_URL": database_url_for(server_url, name),
            "DATABASE_POOL_SIZE": str(pool_size),
            "JWT_SECRET": TEST_JWT_SECRET,
            "PORTRAITS_DATA_DIR": str(tmp_path),
        }
    )
    app = LifespanState(create_app(settings))
    try:
        async with (
            LifespanManager(app) as manager,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://test") as client,
        ):
            yield HealthApp(client, app.state["pool"], server_url, name)
    finally:
        await drop_database(server_url, name)


async def test_healthz_follows_the_database(server_url: str, tmp_path: Path) -> None:
    # given an app on a database of its own
    async with health_app(server_url, tmp_path) as app:
        healthy = await app.client.get("/healthz")

        # when the database disappears under it (its connections are terminated)
        await drop_database(server_url, app.database)
        unhealthy = await app.client.get("/healthz")

    # then the check turns from 200 to 503, with a JSON body and no stack trace
    assert (healthy.status_code, healthy.json()) == (200, {"status": "ok"})
    assert (unhealthy.status_code, unhealthy.json()) == (503, {"status": "unavailable", "database": "unreachable"})


async def test_healthz_answers_ok_while_every_pooled_connection_is_taken(server_url: str, tmp_path: Path) -> None:
    # given an app whose every pooled connection is held (as 1,000 concurrent requests would hold them)
    async with health_app(server_url, tmp_path, pool_size=3) as app, AsyncExitStack() as held:
        for _ in range(app.pool.get_max_size()):
            await held.enter_async_context(app.pool.acquire())
        with pytest.raises(TimeoutError):
            await app.pool.acquire(timeout=0.2)  # a request would now queue for one

        # when /healthz is asked, 50 times at once
        async with asyncio.timeout(HEALTHZ_WITHIN_SECONDS):
            answers = await asyncio.gather(*(app.client.get("/healthz") for _ in range(50)))
        backends = await app.health_backends()

    # then every check says the database is fine, on one connection of its own beside the pool
    assert {(answer.status_code, answer.content) for answer in answers} == {(200, b'{"status":"ok"}')}
    assert len(backends) == 1


async def test_healthz_reconnects_when_its_connection_is_terminated(server_url: str, tmp_path: Path) -> None:
    # given an app whose health check has opened its connection
    async with health_app(server_url, tmp_path) as app:
        first = await app.client.get("/healthz")
        [terminated] = await app.health_backends()

        # when PostgreSQL terminates that connection (an administrator, a failover, an idle timeout)
        admin = await asyncpg.connect(server_url)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", terminated)
        finally:
            await admin.close()
        again = await app.client.get("/healthz")
        reopened = await app.health_backends()

    # then the next check opens a fresh connection and still says ok: a lost connection is not a lost database
    assert (first.status_code, again.status_code) == (200, 200)
    assert len(reopened) == 1 and reopened != [terminated]
