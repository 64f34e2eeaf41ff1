"""`portraits serve` as a user runs it: a real process, embedded PostgreSQL, real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx

from server.auth import TokenSettings, TokenVerifier, issue_token
from tests.conftest import s3_environ
from tests.server_process import READY, Server
from tests.support import TEST_JWT_SECRET, free_port


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[0])


def wait_until_gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def graphql(server: Server, token: str, query: str) -> dict:
    response = httpx.post(f"{server.url}/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.json()


def test_serve_runs_stops_and_restarts_on_its_embedded_postgres(tmp_path: Path, servers: list[Server]) -> None:
    # given a fresh folder, `serve` starts PostgreSQL, migrates, serves and prints a working token
    first = Server(tmp_path)
    servers.append(first)
    first.wait_for(READY)
    assert f"GraphiQL   {first.url}/graphql" in first.rest_of_output()
    token = first.dev_token()
    assert httpx.get(f"{first.url}/healthz").json() == {"status": "ok"}
    created = graphql(first, token, 'mutation { createCharacter(input: {name: "Kept", description: "d"}) { id } }')
    assert "errors" not in created
    assert "GraphiQL" in httpx.get(f"{first.url}/graphql", headers={"Accept": "text/html"}).text

    # when a second `serve` starts on the same folder, it refuses clearly and harms nothing
    second = Server(tmp_path)
    servers.append(second)
    assert second.process.wait(60) == 1
    assert "already running on" in second.rest_of_output()
    assert httpx.get(f"{first.url}/healthz").status_code == 200

    # when the first gets Ctrl-C, it stops cleanly, PostgreSQL included
    pg_pid = postmaster_pid(tmp_path)
    assert first.stop(signal.SIGINT) == 0
    assert wait_until_gone(pg_pid)
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()

    # then a new run reuses the data: the character is still there for the same dev user
    third = Server(tmp_path)
    servers.append(third)
    third.wait_for(READY)
    listed = graphql(third, third.dev_token(), "{ characters { edges { node { name } } } }")
    assert listed["data"]["characters"]["edges"] == [{"node": {"name": "Kept"}}]

    # when it is SIGKILLed, PostgreSQL does not outlive it, and the next run starts
    pg_pid = postmaster_pid(tmp_path)
    third.process.kill()
    third.process.wait()
    assert wait_until_gone(pg_pid), "PostgreSQL outlived its SIGKILLed owner"
    fourth = Server(tmp_path)
    servers.append(fourth)
    fourth.wait_for(READY)
    assert httpx.get(f"{fourth.url}/healthz").status_code == 200
    assert fourth.stop(signal.SIGTERM) == 0
    assert "embedded PostgreSQL stopped" in fourth.rest_of_output()


def test_serve_with_database_url_starts_no_postgres(tmp_path: Path, servers: list[Server], database_url: str) -> None:
    server = Server(tmp_path, DATABASE_URL=database_url, JWT_SECRET=TEST_JWT_SECRET)
    servers.append(server)
    server.wait_for(READY)

    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert "Database   DATABASE_URL" in server.rest_of_output()
    assert not (tmp_path / "pgdata").exists()
    assert server.stop(signal.SIGTERM) == 0


def test_production_refuses_to_start_without_a_secret(tmp_path: Path, servers: list[Server], database_url: str) -> None:
    server = Server(tmp_path, PORTRAITS_ENV="production", DATABASE_URL=database_url)
    servers.append(server)

    assert server.process.wait(30) == 2
    assert "PORTRAITS_ENV=production needs JWT_SECRET" in server.rest_of_output()
    assert not (tmp_path / "jwt-secret").exists()


async def test_token_command_prints_a_token_the_server_accepts(tmp_path: Path) -> None:
    env = {**os.environ, "PORTRAITS_DATA_DIR": str(tmp_path), "JWT_SECRET": TEST_JWT_SECRET}
    user = "0b1c2d3e-0000-4000-8000-000000000001"

    out = subprocess.run(
        [sys.executable, "-m", "server.cli", "token", "--user", user, "--ttl", "60"],
        env=env,
        capture_output=True,
        text=True,
    )

    assert out.returncode == 0, out.stderr
    viewer = await TokenVerifier(TEST_JWT_SECRET, TokenSettings()).verify(out.stdout.strip())
    assert viewer is not None and str(viewer.user_id) == user


def test_an_s3_endpoint_switches_serve_to_s3(
    tmp_path: Path, servers: list[Server], database_url: str, s3_endpoint: str
) -> None:
    # given: nothing but the S3 variables (and the test database) set
    environ = s3_environ(s3_endpoint)
    server = Server(tmp_path, DATABASE_URL=database_url, JWT_SECRET=TEST_JWT_SECRET, **environ)
    servers.append(server)
    server.wait_for(READY)
    # then: the server says so, made its buckets, and keeps no objects on disk
    assert f"Objects    S3 at {s3_endpoint}" in server.rest_of_output()
    buckets = httpx.get(f"{s3_endpoint}/").text
    assert f"{environ['S3_BUCKET_PREFIX']}user-library" in buckets
    assert f"{environ['S3_BUCKET_PREFIX']}workspace-temp" in buckets
    assert not (tmp_path / "objects").exists()
    assert server.stop(signal.SIGTERM) == 0


def test_an_unreachable_s3_endpoint_stops_serve_with_a_clear_error(
    tmp_path: Path, servers: list[Server], database_url: str
) -> None:
    environ = {
        **s3_environ(f"http://127.0.0.1:{free_port()}"),
        "DATABASE_URL": database_url,
        "JWT_SECRET": TEST_JWT_SECRET,
    }
    server = Server(tmp_path, **environ)
    servers.append(server)

    # 3 is uvicorn's "startup failed"; the embedded-less server has nothing else to stop.
    assert server.process.wait(60) == 3
    assert "S3 unreachable during create buckets" in server.rest_of_output()


def test_serve_runs_a_worker_that_generates_portraits_offline(
    tmp_path: Path, servers: list[Server], database_url: str
) -> None:
    # given `portraits serve` with its default settings (one worker, the local renderer)
    server = Server(tmp_path, DATABASE_URL=database_url, JWT_SECRET=TEST_JWT_SECRET)
    servers.append(server)
    server.wait_for(READY)
    token = issue_token(TEST_JWT_SECRET, uuid.uuid4(), ttl=timedelta(minutes=5))
    created = graphql(
        server, token, 'mutation { createCharacter(input: {name: "Ilse", description: "A cartographer"}) { id } }'
    )
    character_id = created["data"]["createCharacter"]["id"]

    # when a portrait is requested
    started = graphql(
        server, token, f'mutation {{ generateCharacterPortrait(input: {{characterId: "{character_id}"}}) {{ id }} }}'
    )
    job_id = started["data"]["generateCharacterPortrait"]["id"]

    # then the server's own worker completes it and the character shows its library portrait
    deadline = time.monotonic() + 30
    while True:
        job = graphql(
            server, token, f'{{ job(id: "{job_id}") {{ status character {{ imageUrl signedImageUrl {{ url }} }} }} }}'
        )
        if job["data"]["job"]["status"] == "COMPLETED" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert job["data"]["job"]["status"] == "COMPLETED", job
    character = job["data"]["job"]["character"]
    assert character["imageUrl"].startswith("user-library/") and character["imageUrl"].endswith(f"_{character_id}.png")
    image = httpx.get(character["signedImageUrl"]["url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert server.stop(signal.SIGTERM) == 0
