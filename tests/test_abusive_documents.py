"""Abusive documents sent at once to a real `portraits serve` come back quickly, and /healthz answers meanwhile."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx

from graph.schema import MAX_ALIASES, MAX_REPEATS, MAX_TOKENS
from tests.server_process import READY, Server
from tests.support import TEST_JWT_SECRET
from tests.test_document_cost import doubling_fragments
from tests.test_result_size import introspection_walk

# Generous bounds that prove nothing stalled (the old validators took hours on the 40-level document).
ANSWER_WITHIN_SECONDS = 30
HEALTHZ_WITHIN_SECONDS = 10
COPIES = 3


def shapes() -> dict[str, tuple[str, str | None]]:
    """Each abusive shape: (document, the measure that refuses it, or None when it runs)."""
    return {
        "doubling fragments, 20 levels": (doubling_fragments(20), "selections"),
        "doubling fragments, 40 levels": (doubling_fragments(40), "selections"),
        "doubling fragments, 190 levels": (doubling_fragments(190), "selections"),
        "many aliases": ("{ " + " ".join(f"a{i}: __typename" for i in range(MAX_ALIASES * 5)) + " }", "aliases"),
        "deep nesting": ("{ characters { " + "a { " * 120 + "id" + " }" * 120 + " } }", "depth"),
        "wide fields": ("{ " + "__typename " * (MAX_TOKENS - 10) + "}", "fields"),
        "most same-named fields accepted": ("{ " + '__type(name: "Query") { name } ' * MAX_REPEATS + "}", None),
        "same name, long arguments": ("mutation { " + f'deleteCharacter(id: "{"x" * 470}") ' * 199 + "}", "repeats"),
        "walk of every type's fields": (introspection_walk(29), "introspection"),
    }


async def test_abusive_documents_are_answered_quickly_while_healthz_answers(
    tmp_path: Path, servers: list[Server], database_url: str
) -> None:
    # given a real server process
    server = Server(tmp_path, DATABASE_URL=database_url, JWT_SECRET=TEST_JWT_SECRET, WORKERS="0")
    servers.append(server)
    await asyncio.to_thread(server.wait_for, READY)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=ANSWER_WITHIN_SECONDS) as client:
        # when every shape is sent several times at once (each copy a new text, so no cache helps),
        # while /healthz is asked over and over
        async def send(name: str, document: str) -> tuple[str, dict[str, Any]]:
            response = await client.post("/graphql", json={"query": f"{document}\n# {uuid.uuid4()}"})
            assert response.status_code == 200, (name, response.text)
            body: dict[str, Any] = response.json()
            return name, body

        done = asyncio.Event()
        health: list[int] = []

        async def poll_healthz() -> None:
            while not done.is_set():
                answer = await client.get("/healthz", timeout=HEALTHZ_WITHIN_SECONDS)
                health.append(answer.status_code)
                await asyncio.sleep(0.02)

        poller = asyncio.create_task(poll_healthz())
        expected = shapes()
        requests = [send(name, document) for name, (document, _) in expected.items() for _ in range(COPIES)]
        try:
            answers = await asyncio.wait_for(asyncio.gather(*requests), ANSWER_WITHIN_SECONDS)
        finally:
            done.set()
            await poller

        # then every answer came back, refused by its measure or run, and /healthz answered 200 all along
        assert len(answers) == COPIES * len(expected)
        for name, body in answers:
            refused_by = expected[name][1]
            if refused_by is None:
                assert "errors" not in body, (name, body)
                assert body["data"]["__type"] == {"name": "Query"}
            else:
                assert body.get("data") is None, (name, body)
                assert refused_by in [error["extensions"].get("measure") for error in body["errors"]], (name, body)
                assert {error["extensions"]["code"] for error in body["errors"]} == {"GRAPHQL_VALIDATION_FAILED"}
        assert health and set(health) == {200}

    assert "Traceback" not in server.rest_of_output()
