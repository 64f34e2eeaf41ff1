"""Helpers shared by tests: databases of their own, error extraction."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

TEST_JWT_SECRET = "test-secret-that-is-long-enough-for-production-checks-and-hs512!!"


def database_url_for(server_url: str, database: str) -> str:
    """The same server URL (TCP or Unix socket) naming another database."""
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


async def new_database(server_url: str, *, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name


async def drop_database(server_url: str, name: str) -> None:
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def request_id_checked(body: Any, headers: Mapping[str, str]) -> Any:
    """``body`` with each error's ``extensions.requestId`` taken out, once checked to be the response's id.

    Every response carries ``X-Request-ID`` and every error its request's id (server/request_ids.py), so the
    tests comparing extensions whole go on comparing what they were written for.
    """
    request_id = headers.get("x-request-id")
    assert request_id, "a response without X-Request-ID"
    if isinstance(body, dict):
        for error in body.get("errors") or []:
            extensions = error.get("extensions") if isinstance(error, dict) else None
            assert isinstance(extensions, dict) and extensions.pop("requestId", None) == request_id, (error, request_id)
    return body


def error_codes(body: dict[str, Any]) -> list[str]:
    return [error.get("extensions", {}).get("code") for error in body.get("errors", [])]


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    errors = body.get("errors") or []
    assert len(errors) == 1, body
    error: dict[str, Any] = errors[0]
    return error


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServedUvicorn:
    """A uvicorn server running in the test's event loop."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    def url(self, path: str = "/", scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(asyncio.shield(self.task), 15)


@asynccontextmanager
async def serve_uvicorn(config: uvicorn.Config) -> AsyncIterator[ServedUvicorn]:
    """``config`` served by a real uvicorn in this event loop until the block ends (clients reach it over TCP)."""
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    served = ServedUvicorn(server, task, config.port)
    try:
        yield served
    finally:
        await served.stop()


async def subscriptions_live(base_url: str, count: int, *, timeout: float = 30.0) -> None:
    """Wait until the server at ``base_url`` has exactly ``count`` subscriptions live in its event hub (its
    ``portraits_subscriptions_open`` gauge): nothing in the protocols says when a subscription is listening,
    or when a stopped one has ended."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        while True:
            text = (await client.get("/metrics")).text
            live = sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "portraits_subscriptions_open"
            )
            if live == count:
                return
            assert asyncio.get_running_loop().time() < deadline, f"{live} of {count} subscriptions live"
            await asyncio.sleep(0.05)


def rss_bytes(pid: int) -> int:
    """A process's resident memory, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")
