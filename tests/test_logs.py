"""The logs of a real `portraits serve`: one JSON object per line with its ids, and no secret in any line.

A full flow (create a character, generate a portrait with the local
provider, read its signed URL, download it, subscribe) runs against the
process with ``LOG_FORMAT=json`` and ``LOG_LEVEL=debug``, on the local store
(signed URLs served by the process itself, ``?token=<JWT>``) and on S3
(moto over HTTP, SigV4 URLs, credentials of the test's own); then every line
the process logged is parsed and searched for the bearer tokens, the signed
URL's signature, the JWT secret and the S3 credentials.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest

from server.auth import issue_token
from tests.conftest import s3_environ
from tests.realtime_support import GraphQLSocket, data_of
from tests.server_process import READY, LoggedServer, Server
from tests.support import TEST_JWT_SECRET, free_port

CREATE = 'mutation { createCharacter(input: {name: "Wren", description: "A lighthouse keeper"}) { id } }'
GENERATE = "mutation($id: ID!) { generateCharacterPortrait(input: {characterId: $id}) { id } }"
JOB = "query($id: ID!) { job(id: $id) { status character { imageUrl signedImageUrl { url } } } }"
WATCH = "subscription($id: ID!) { jobUpdated(id: $id) { status character { signedImageUrl { url } } } }"
FIELDS = {"time", "level", "logger", "message"}
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def post(http: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any], request_id: str) -> Any:
    response = await http.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == request_id
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


async def run_flow(server: Server, token: str) -> dict[str, str]:
    """Every step of a client's day; what the logs must not show, by name."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        character = (await post(http, token, CREATE, {}, "flow-create"))["createCharacter"]["id"]
        job = (await post(http, token, GENERATE, {"id": character}, "flow-generate"))["generateCharacterPortrait"]["id"]
        for _ in range(600):
            state = (await post(http, token, JOB, {"id": job}, "flow-poll"))["job"]
            if state["status"] in ("COMPLETED", "FAILED"):
                break
            await asyncio.sleep(0.05)
        assert state["status"] == "COMPLETED", state
        signed_url = state["character"]["signedImageUrl"]["url"]
        image = await http.get(signed_url, headers={"X-Request-ID": "flow-download"})
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG"), image.status_code

    socket_url = server.url.replace("http://", "ws://") + "/graphql"
    upgrade = {"Authorization": f"Bearer {token}", "X-Request-ID": "flow-socket"}
    async with GraphQLSocket.open(socket_url, token=token, headers=upgrade) as socket:
        operation = await socket.subscribe(WATCH, {"id": job})
        [update] = await socket.results_until_complete(operation)
        watched = data_of(update, "jobUpdated")
        assert watched["status"] == "COMPLETED" and watched["character"]["signedImageUrl"]["url"], update

    query = parse_qs(urlsplit(signed_url).query)
    signature = (query.get("token") or query.get("X-Amz-Signature") or [""])[0]
    assert signature, signed_url
    return {
        "job": job,
        "bearer token": token,
        "bearer token's signature": token.rsplit(".", 1)[1],
        "signed URL": signed_url,
        "signed URL's query": urlsplit(signed_url).query,
        "signed URL's signature": signature,
        "JWT secret": TEST_JWT_SECRET,
    }


def parsed_log(server: Server) -> list[dict[str, Any]]:
    """Every line the stopped server wrote to stderr, each one JSON object with the four fields."""
    assert server.log_reader is not None
    server.log_reader.join(10)
    entries = []
    for line in server.log_lines:
        entry = orjson.loads(line)  # raises on any line that is not JSON
        assert isinstance(entry, dict) and set(entry) >= FIELDS, line
        assert ISO_UTC.fullmatch(entry["time"]), line
        assert entry["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), line
        entries.append(entry)
    return entries


@pytest.mark.parametrize("store", ["local", "s3"])
async def test_a_full_flow_logs_json_lines_with_their_ids_and_no_secret(
    tmp_path: Path, servers: list[Server], database_url: str, s3_endpoint: str, store: str
) -> None:
    # given `portraits serve` logging JSON at DEBUG, with S3 credentials of its own when on S3
    s3 = {}
    if store == "s3":
        s3 = {
            **s3_environ(s3_endpoint),
            "AWS_ACCESS_KEY_ID": f"AKIA{secrets.token_hex(8).upper()}",
            "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
            "AWS_SESSION_TOKEN": secrets.token_urlsafe(60),
        }
    server = LoggedServer(
        tmp_path, DATABASE_URL=database_url, JWT_SECRET=TEST_JWT_SECRET,
        LOG_FORMAT="json", LOG_LEVEL="debug", **s3,
    )
    servers.append(server)
    server.wait_for(READY)
    user = uuid.uuid4()
    token = issue_token(TEST_JWT_SECRET, user, ttl=timedelta(minutes=5))

    # when a client goes through the whole flow, and the server is stopped
    hidden = await run_flow(server, token)
    job = hidden.pop("job")
    assert server.stop(signal.SIGTERM) == 0

    # then every line it logged is a JSON object with time, level, logger and message
    entries = parsed_log(server)
    stdout = server.rest_of_output()
    assert entries and not [line for line in stdout.splitlines() if line.startswith("{")]  # stdout: the banner only
    # and the lines of a request carry its id (taken from the client) and its user
    create = [entry for entry in entries if entry.get("request_id") == "flow-create"]
    assert {(entry["logger"], entry.get("user_id"), entry.get("status")) for entry in create} >= {
        ("uvicorn.access", str(user), 200)
    }, create
    # and the download's access line (the local store's URLs are the server's own) shows the path, its query cut
    if store == "local":
        [download] = [entry for entry in entries if entry.get("request_id") == "flow-download"]
        assert download["path"].startswith("/storage/v1/object/sign/user-library/") and download["status"] == 200
        assert download["path"].endswith("?[redacted]"), download
    # and the worker's lines name the job and its owner, with no request
    worker = [entry for entry in entries if entry.get("job_id") == job]
    assert any(entry["message"] == f"job {job} completed" for entry in worker), worker
    assert all(entry.get("user_id") == str(user) and "request_id" not in entry for entry in worker), worker
    # and debug lines were written (the level reached the process)
    assert any(entry["level"] == "DEBUG" for entry in entries)

    # and no line shows a bearer token, a signed URL's signature, the JWT secret or an S3 credential
    hidden["dev token"] = server.dev_token()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if name in s3:
            hidden[name] = s3[name]
    log = "\n".join(server.log_lines)
    leaks = [name for name, value in hidden.items() if value in log]
    assert not leaks, leaks


async def test_text_stays_the_default_format(tmp_path: Path, servers: list[Server], database_url: str) -> None:
    # given `portraits serve` with no LOG_FORMAT
    server = Server(tmp_path, DATABASE_URL=database_url, JWT_SECRET=TEST_JWT_SECRET)
    servers.append(server)
    server.wait_for(READY)
    async with httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.get("/healthz", headers={"X-Request-ID": "text-1"})
    assert answer.headers["x-request-id"] == "text-1"
    assert server.stop(signal.SIGTERM) == 0
    output = server.rest_of_output()
    # then our lines read "time LEVEL logger: message" and uvicorn's keep their own form, as `make run` printed
    ours = [line for line in output.splitlines() if " pipeline.worker: " in line]
    assert ours, output
    stamp = ours[0].split(" INFO ")[0]
    assert datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f"), ours[0]
    assert re.search(r"^INFO: +Uvicorn running on ", output, re.MULTILINE), output
    assert re.search(r'^INFO: +127\.0\.0\.1:\d+ - "GET /healthz HTTP/1\.1" 200', output, re.MULTILINE), output
    assert not [line for line in output.splitlines() if line.startswith("{")]


def test_a_command_that_fails_says_why_in_a_json_line(tmp_path: Path) -> None:
    # given a database URL nothing listens on, with a password in it
    password = f"hunter2-{secrets.token_hex(6)}"
    url = f"postgresql://portraits:{password}@127.0.0.1:{free_port()}/portraits"
    environ = {**os.environ, "PORTRAITS_DATA_DIR": str(tmp_path), "DATABASE_URL": url, "LOG_FORMAT": "json"}

    # when `portraits migrate` cannot reach it
    out = subprocess.run([sys.executable, "-m", "server.cli", "migrate"], env=environ, capture_output=True, text=True)

    # then it exits 1 and its stderr is JSON lines, the last saying why, with no password in any
    assert out.returncode == 1, out.stderr
    entries = [orjson.loads(line) for line in out.stderr.splitlines()]
    assert entries[-1]["level"] == "CRITICAL" and "Connect call failed" in entries[-1]["message"], entries
    assert password not in out.stderr
