"""Realtime across processes: two `portraits serve` and a `portraits worker` on one database.

Each server process has its own LISTEN connection; events come from the
database, so a change made through one process, or by the worker, reaches
subscribers on every process. With BROADCAST_URL=redis://... the same holds
through broadcaster's Redis backend.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from realtime.postgres_backend import APPLICATION_NAME as LISTEN_APPLICATION_NAME
from tests.conftest import token_for
from tests.realtime_support import CHARACTER_IMAGE_UPDATED, JOB_UPDATED, GraphQLSocket, data_of
from tests.server_process import READY, Server
from tests.support import TEST_JWT_SECRET
from tests.test_notify_backend import REDIS_URL, redis_is_running, terminate

BACKENDS = [
    pytest.param("postgres", id="postgres"),
    pytest.param(
        "redis", id="redis", marks=pytest.mark.skipif(not redis_is_running(), reason="no Redis on 127.0.0.1:6379")
    ),
]


def start(
    servers: list[Server], data_dir: Path, database_url: str, backend: str, *, command: str = "serve", **env: str
) -> Server:
    environment = {"DATABASE_URL": database_url, "JWT_SECRET": TEST_JWT_SECRET, "WORKERS": "0", **env}
    if backend == "redis":
        environment["BROADCAST_URL"] = REDIS_URL
    process = Server(data_dir, command=command, **environment)
    servers.append(process)
    return process


def post(server: Server, user: uuid.UUID, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/graphql", json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token_for(user)}"}, timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return body["data"]


def ws_url(server: Server) -> str:
    return f"ws://127.0.0.1:{server.port}/graphql"


CREATE = "mutation($input: CreateCharacterInput!) { createCharacter(input: $input) { id } }"
SET_IMAGE = "mutation($id: ID!, $url: String) { updateCharacter(id: $id, input: {imageUrl: $url}) { id } }"
GENERATE = "mutation($id: ID!) { generateCharacterPortrait(input: {characterId: $id}) { id status } }"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_change_through_one_server_reaches_a_subscriber_on_the_other(
    tmp_path: Path, database_url: str, servers: list[Server], alice: uuid.UUID, backend: str
) -> None:
    # given two server processes on one database
    first = start(servers, tmp_path, database_url, backend)
    second = start(servers, tmp_path, database_url, backend)
    first.wait_for(READY)
    second.wait_for(READY)
    character = post(
        first, alice, CREATE, {"input": {"name": "Iris", "description": "A cartographer."}}
    )["createCharacter"]

    # and a subscriber on the second
    async with GraphQLSocket.open(ws_url(second), token=token_for(alice)) as socket:
        await socket.subscribe(CHARACTER_IMAGE_UPDATED, {"characterId": character["id"]})
        # (a first change proves the subscription is live before the one under test)
        post(first, alice, SET_IMAGE, {"id": character["id"], "url": "https://example.com/warm.png"})
        assert data_of(await socket.next_result(), "characterImageUpdated")["imageUrl"] == "https://example.com/warm.png"

        # when the image changes through the first
        post(first, alice, SET_IMAGE, {"id": character["id"], "url": "https://example.com/iris.png"})

        # then the subscriber on the second hears it
        update = data_of(await socket.next_result(), "characterImageUpdated")
    assert (update["id"], update["imageUrl"]) == (character["id"], "https://example.com/iris.png")


async def test_a_worker_processs_progress_reaches_both_servers_even_across_a_killed_listen_connection(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool, servers: list[Server], alice: uuid.UUID
) -> None:
    # given two servers, a queued portrait job, and a subscriber to it on each server
    first = start(servers, tmp_path, database_url, "postgres")
    second = start(servers, tmp_path, database_url, "postgres")
    first.wait_for(READY)
    second.wait_for(READY)
    character = post(
        first, alice, CREATE, {"input": {"name": "Iris", "description": "A cartographer."}}
    )["createCharacter"]
    job = post(first, alice, GENERATE, {"id": character["id"]})["generateCharacterPortrait"]
    async with GraphQLSocket.open(ws_url(first), token=token_for(alice)) as one, GraphQLSocket.open(
        ws_url(second), token=token_for(alice)
    ) as two:
        operations = {
            one: await one.subscribe(JOB_UPDATED, {"id": job["id"]}),
            two: await two.subscribe(JOB_UPDATED, {"id": job["id"]}),
        }
        for socket in operations:
            assert data_of(await socket.next_result(), "jobUpdated")["status"] == "QUEUED"

        # when a worker process runs the job (slowly), and both servers' LISTEN connections are killed mid-job
        start(servers, tmp_path, database_url, "postgres", command="worker", LOCAL_RENDER_LATENCY_MS="1500")
        for socket in operations:
            assert data_of(await socket.next_result(), "jobUpdated")["status"] == "PROCESSING"
        assert await terminate(pool, LISTEN_APPLICATION_NAME) >= 2

        # then each subscriber still gets the final state, and its stream completes
        finals = {}
        for socket, operation in operations.items():
            results = [data_of(message, "jobUpdated") for message in await socket.results_until_complete(operation)]
            finals[socket] = results[-1]
    for final in finals.values():
        assert final["status"] == "COMPLETED"
        assert final["character"]["imageUrl"].startswith(f"user-library/{alice}/")
