"""/healthz answers for the database: 200 while it answers, 503 once it is gone."""

from __future__ import annotations

from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from server.app import create_app
from server.settings import Settings
from tests.support import TEST_JWT_SECRET, database_url_for, drop_database, new_database


async def test_healthz_follows_the_database(server_url: str, tmp_path: Path) -> None:
    # given an app on a database of its own
    name = await new_database(server_url, prefix="portraits_health")
    settings = Settings.from_environ(
        {
            "DATABASE_URL": database_url_for(server_url, name),
            "JWT_SECRET": TEST_JWT_SECRET,
            "PORTRAITS_DATA_DIR": str(tmp_path),
        }
    )
    async with (
        LifespanManager(create_app(settings)) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://test") as client,
    ):
        healthy = await client.get("/healthz")

        # when the database disappears under it (its connections are terminated)
        await drop_database(server_url, name)
        unhealthy = await client.get("/healthz")

    # then the check turns from 200 to 503, with a JSON body and no stack trace
    assert (healthy.status_code, healthy.json()) == (200, {"status": "ok"})
    assert (unhealthy.status_code, unhealthy.json()) == (503, {"status": "unavailable", "database": "unreachable"})
