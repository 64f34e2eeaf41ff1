"""Apollo Client 4's own persisted-queries link against the server, over POST and GET (tests/node/apollo-persisted)."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import asyncpg
import pytest

from storage import persisted_documents
from tests.node_packages import run_node_json

NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"


async def run_link(live_server: str, method: str) -> tuple[dict[str, Any], str]:
    """Run the link twice on one new document; its exchanges and results, and the alias that made it new.

    ``live_server`` is the app's websocket URL (ws://...); the link speaks HTTP to the same address."""
    marker = f"m{uuid.uuid4().hex[:12]}"
    run: dict[str, Any] = await run_node_json(
        "apollo-persisted", "apq.mjs", "http" + live_server.removeprefix("ws"), method, marker
    )
    return run, marker


def persisted_extension(exchange: dict[str, Any]) -> dict[str, Any]:
    if exchange["method"] == "GET":
        extensions: dict[str, Any] = json.loads(exchange["params"]["extensions"])
    else:
        extensions = exchange["body"]["extensions"]
    persisted: dict[str, Any] = extensions["persistedQuery"]
    return persisted


@pytest.mark.parametrize("method", ["post", "get"])
async def test_apollo_client_persisted_query_link(live_server: str, pool: asyncpg.Pool, method: str) -> None:
    """Given Apollo Client with its persisted-queries link (hashes over GET with useGETForHashedQueries),
    when it runs a query the server has not seen, and then again,
    then it sent the hash alone and got PERSISTED_QUERY_NOT_FOUND (400: the link accepts
    application/graphql-response+json, where an answer without data is a 4xx), sent hash and document by POST,
    got the data,
    and the second time the hash alone was enough; the document is kept under the hash the link computed."""
    run, marker = await run_link(live_server, method)

    exchanges = run["exchanges"]
    verb = method.upper()
    assert [(e["method"], e["status"]) for e in exchanges] == [(verb, 400), ("POST", 200), (verb, 200)]
    not_found, registered, by_hash = exchanges
    assert [e["extensions"]["code"] for e in not_found["response"]["errors"]] == [NOT_FOUND]
    assert not_found["cacheControl"] == "private, no-cache, must-revalidate"
    hashed = persisted_extension(not_found)
    assert hashed["version"] == 1
    document = registered["body"]["query"]
    assert marker in document and hashed["sha256Hash"] == hashlib.sha256(document.encode()).hexdigest()
    for hash_only in (not_found, by_hash):
        assert "query" not in (hash_only["params"] if hash_only["method"] == "GET" else hash_only["body"])
        assert persisted_extension(hash_only) == hashed
    assert registered["response"]["data"][marker] == by_hash["response"]["data"][marker]
    assert [result["error"] for result in run["results"]] == [None, None]
    assert run["results"][0]["data"] == run["results"][1]["data"] and run["results"][0]["data"][marker]
    stored = await persisted_documents.find(pool, hashed["sha256Hash"])
    assert stored is not None and stored.body == document
