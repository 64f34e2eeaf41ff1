"""Persisted queries: Apollo's automatic persisted queries exactly as its link speaks them, the shared bounded
store, and the registered-only production mode (server/persisted_queries.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
from asgi_lifespan import LifespanManager

from graph.schema import MAX_CACHED_DOCUMENT_CHARS
from server.app import create_app
from server.cli import uvicorn_config
from server.settings import PERSISTED_OFF, PERSISTED_REGISTERED, PersistedDocumentsConfig, Settings
from storage import persisted_documents
from storage.persisted_documents import MAX_BODY_CHARS, PersistedDocument, Source
from tests.conftest import token_for
from tests.realtime_support import GraphQLSocket, error_codes_of
from tests.support import free_port, request_id_checked, serve_uvicorn

UNCACHED = "private, no-cache, must-revalidate"
# What Apollo Client's HttpLink accepts (a GET without it would be GraphiQL's page).
LINK_ACCEPT = {"accept": "application/graphql-response+json,application/json;q=0.9"}
NOT_FOUND_BODY = {
    "errors": [{"message": "PersistedQueryNotFound", "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}]
}


def unique_query() -> str:
    """A public query no other test sends (its comment makes its hash new), as Apollo Client prints documents."""
    return f"# {uuid.uuid4()}\nquery Models {{\n  imageModels {{\n    modelKey\n    __typename\n  }}\n}}"


def sha256(document: str) -> str:
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def extension(document: str, version: object = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": sha256(document)}}


def hash_only_post(document: str, operation_name: str = "Models") -> dict[str, Any]:
    """The body Apollo's HttpLink sends under the persisted-queries link: no ``query`` at all."""
    return {"operationName": operation_name, "variables": {}, "extensions": extension(document)}


def hash_only_get(document: str, operation_name: str = "Models") -> dict[str, str]:
    """The query string Apollo's HttpLink sends with ``useGETForHashedQueries``: JSON in parameters, no query."""
    return {
        "operationName": operation_name,
        "variables": "{}",
        "extensions": json.dumps(extension(document), separators=(",", ":")),
    }


def with_query(document: str, operation_name: str = "Models") -> dict[str, Any]:
    """The link's retry: the same request with the document (always a POST)."""
    return {**hash_only_post(document, operation_name), "query": document}


def body_of(response: httpx.Response) -> Any:
    return request_id_checked(response.json(), response.headers)


@asynccontextmanager
async def app_client(settings: Settings, **persisted: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A fresh app (its own process memory) on the tests' database, with these persisted-document settings."""
    config = replace(PersistedDocumentsConfig(), **persisted)
    async with LifespanManager(create_app(replace(settings, persisted_documents=config))) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def test_apollo_link_over_post(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    """Given a document the server has never seen,
    when Apollo's link sends its hash alone, then hash and document, then the hash alone again,
    then the first answer is Apollo Server's PersistedQueryNotFound (200, never cached), the second runs and
    registers it, and the third runs it from the hash."""
    document = unique_query()

    first = await client.post("/graphql", json=hash_only_post(document))
    assert first.status_code == 200, first.text
    assert body_of(first) == NOT_FOUND_BODY
    assert first.headers["cache-control"] == UNCACHED

    second = await client.post("/graphql", json=with_query(document))
    assert second.status_code == 200, second.text
    models = body_of(second)["data"]["imageModels"]
    assert models and all(model["__typename"] == "ImageModel" for model in models)
    stored = await persisted_documents.find(pool, sha256(document))
    assert stored is not None and stored.body == document and stored.source is Source.AUTOMATIC

    third = await client.post("/graphql", json=hash_only_post(document))
    assert third.status_code == 200, third.text
    assert body_of(third) == {"data": {"imageModels": models}}


async def test_apollo_link_over_get(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    """Given the link with useGETForHashedQueries,
    when it GETs the hash alone, POSTs hash and document on PersistedQueryNotFound, then GETs the hash again,
    then the GET is answered not found (uncached) first and with the data after: a URL a CDN can cache.
    The link accepts application/graphql-response+json, where an answer without data is a 4xx (the spec's
    rule; Apollo Server's 200 is application/json's), and the link reads the errors of a 4xx body."""
    document = unique_query()

    first = await client.get("/graphql", params=hash_only_get(document), headers=LINK_ACCEPT)
    assert first.status_code == 400, first.text
    assert first.headers["content-type"].startswith("application/graphql-response+json")
    assert body_of(first) == NOT_FOUND_BODY
    assert first.headers["cache-control"] == UNCACHED

    registered = await client.post("/graphql", json=with_query(document))
    assert registered.status_code == 200, registered.text

    again = await client.get("/graphql", params=hash_only_get(document), headers=LINK_ACCEPT)
    assert again.status_code == 200, again.text
    assert body_of(again) == body_of(registered)
    assert "no-cache" not in again.headers.get("cache-control", "")


async def test_mutation_by_hash_over_get_is_refused(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    """Given a mutation registered by hash and document over POST,
    when its hash alone is sent as a GET,
    then it is refused with 405 and Allow: POST, as a mutation in a GET's query is, and nothing was deleted."""
    user = uuid.uuid4()
    document = f"# {uuid.uuid4()}\nmutation Delete($id: ID!) {{\n  deleteCharacter(id: $id)\n}}"
    variables = {"id": str(uuid.uuid4())}
    auth = {"Authorization": f"Bearer {token_for(user)}"}
    posted = await client.post(
        "/graphql", json={**with_query(document, "Delete"), "variables": variables}, headers=auth
    )
    assert posted.status_code == 200, posted.text
    assert await persisted_documents.find(pool, sha256(document)) is not None

    params = {**hash_only_get(document, "Delete"), "variables": json.dumps(variables)}
    refused = await client.get("/graphql", params=params, headers={**auth, **LINK_ACCEPT})

    assert refused.status_code == 405, refused.text
    assert refused.headers["allow"] == "POST"
    assert body_of(refused)["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_hash_mismatch_is_refused_and_not_kept(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    """Given a document sent with the hash of another document,
    when the server checks it,
    then it answers Apollo Server's 400 'provided sha does not match query' (BAD_REQUEST) and keeps nothing
    under either hash."""
    document, other = unique_query(), unique_query()
    body = {**with_query(document), "extensions": extension(other)}

    response = await client.post("/graphql", json=body)

    assert response.status_code == 400, response.text
    error = body_of(response)["errors"][0]
    assert error["message"] == "provided sha does not match query"
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert await persisted_documents.find(pool, sha256(document)) is None
    assert await persisted_documents.find(pool, sha256(other)) is None


async def test_malformed_persisted_query_is_refused(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    """Given persisted-query extensions of another version, with a hash that is not hex, or not an object,
    when each is sent,
    then each is a 400 BAD_REQUEST that says what is wrong."""
    document = unique_query()
    cases = {
        "version": {"persistedQuery": {"version": 2, "sha256Hash": sha256(document)}},
        "64 lowercase hex": {"persistedQuery": {"version": 1, "sha256Hash": sha256(document).upper()}},
        "must be an object": {"persistedQuery": "abc"},
    }
    for expected, extensions in cases.items():
        response = await client.post("/graphql", json={"extensions": extensions})
        assert response.status_code == 400, (expected, response.text)
        error = body_of(response)["errors"][0]
        assert expected in error["message"] and error["extensions"]["code"] == "BAD_REQUEST", error


async def test_invalid_documents_are_not_kept(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    """Given documents with their right hashes that do not parse, do not validate, or exceed the document limits,
    when they are sent,
    then each gets its GraphQL error and none is kept: the store holds only documents that could run."""
    documents = [
        f"# {uuid.uuid4()}\nquery {{ imageModels {{ modelKey ",
        f"# {uuid.uuid4()}\nquery {{ imageModels {{ noSuchField }} }}",
        f"# {uuid.uuid4()}\nquery {{ " + " ".join(f"a{i}: imageModels {{ modelKey }}" for i in range(40)) + " }",
    ]
    for document in documents:
        response = await client.post("/graphql", json={"query": document, "extensions": extension(document)})
        assert body_of(response)["errors"], response.text
        assert await persisted_documents.find(pool, sha256(document)) is None, document


async def test_another_process_sees_a_registered_document(
    client: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool
) -> None:
    """Given a document registered through one app,
    when a second app on the same database (another process's memory) gets its hash alone,
    then it runs it, read from the shared table."""
    document = unique_query()
    registered = await client.post("/graphql", json=with_query(document))
    assert registered.status_code == 200, registered.text

    async with app_client(settings) as second:
        response = await second.post("/graphql", json=hash_only_post(document))

    assert response.status_code == 200, response.text
    assert body_of(response) == body_of(registered)


async def test_store_is_bounded_least_recently_used_first(settings: Settings, pool: asyncpg.Pool) -> None:
    """Given a store capped at 3 automatic documents, and a registered one,
    when 5 documents are registered in turn through one process while other processes keep using the first,
    then 3 automatic rows remain: the first (recently used, though the oldest), and the newest two; the
    registered one stays."""
    await pool.execute("DELETE FROM persisted_documents")
    pinned = unique_query()
    async with pool.acquire() as connection:
        await persisted_documents.register(
            connection, [PersistedDocument(sha256(pinned), pinned, Source.REGISTERED, None)]
        )
    documents = [unique_query() for _ in range(5)]
    async with app_client(settings, max_count=3) as http:
        for index, document in enumerate(documents):
            response = await http.post("/graphql", json=with_query(document))
            assert response.status_code == 200, response.text
            if index > 0:  # another process loads the first one: it is used
                async with app_client(settings, max_count=3) as other:
                    used = await other.post("/graphql", json=hash_only_post(documents[0]))
                    assert used.status_code == 200 and body_of(used)["data"], used.text

    rows = await pool.fetch("SELECT sha256 FROM persisted_documents WHERE source = 'automatic'")
    kept = {row["sha256"] for row in rows}
    assert kept == {sha256(documents[0]), sha256(documents[3]), sha256(documents[4])}
    assert await persisted_documents.find(pool, sha256(pinned), source=Source.REGISTERED) is not None


async def test_known_document_sent_with_its_text_is_not_written_again(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """Given a document this process has registered,
    when a client sends hash and text again (some clients always do),
    then it runs and the row is not written again (its last use stays as it was)."""
    document = unique_query()
    first = await client.post("/graphql", json=with_query(document))
    assert first.status_code == 200, first.text
    before = await pool.fetchval("SELECT last_used_at FROM persisted_documents WHERE sha256 = $1", sha256(document))

    again = await client.post("/graphql", json=with_query(document))

    assert again.status_code == 200 and body_of(again) == body_of(first), again.text
    after = await pool.fetchval("SELECT last_used_at FROM persisted_documents WHERE sha256 = $1", sha256(document))
    assert before is not None and after == before


async def test_document_size_cap_is_the_schema_cache_bound(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    """Given a valid document longer than the schema's cached-document bound (a long comment),
    when it is sent with its hash,
    then it runs but is not kept: the table's cap is the schema's bound."""
    assert MAX_BODY_CHARS == MAX_CACHED_DOCUMENT_CHARS
    document = "#" + "x" * MAX_BODY_CHARS + "\n" + unique_query()

    response = await client.post("/graphql", json=with_query(document))

    assert response.status_code == 200, response.text
    assert body_of(response)["data"]["imageModels"]
    assert await persisted_documents.find(pool, sha256(document)) is None


async def test_registered_mode(settings: Settings, pool: asyncpg.Pool) -> None:
    """Given PERSISTED_DOCUMENTS=registered and one registered document,
    when a client sends it by hash, as text, or with hash and text, and sends other documents each way,
    then the registered one runs every way, and every other is refused with 403 PERSISTED_QUERY_NOT_IN_LIST
    (not PERSISTED_QUERY_NOT_FOUND, which would make the link retry with text) and never kept."""
    registered, other = unique_query(), unique_query()
    async with pool.acquire() as connection:
        await persisted_documents.register(
            connection, [PersistedDocument(sha256(registered), registered, Source.REGISTERED, "Models")]
        )

    async with app_client(settings, mode=PERSISTED_REGISTERED) as http:
        for request in (hash_only_post(registered), with_query(registered), {"query": registered}):
            response = await http.post("/graphql", json=request)
            assert response.status_code == 200, response.text
            assert body_of(response)["data"]["imageModels"]
        by_get = await http.get("/graphql", params=hash_only_get(registered), headers=LINK_ACCEPT)
        assert by_get.status_code == 200 and body_of(by_get)["data"]["imageModels"], by_get.text

        for request in (hash_only_post(other), with_query(other), {"query": other}):
            response = await http.post("/graphql", json=request)
            assert response.status_code == 403, response.text
            error = body_of(response)["errors"][0]
            assert error["extensions"]["code"] == "PERSISTED_QUERY_NOT_IN_LIST", error
            assert "portraits documents register" in error["message"]
            assert "data" not in body_of(response)
    assert await persisted_documents.find(pool, sha256(other)) is None


async def test_registered_mode_introspection_follows_graphiql(settings: Settings, pool: asyncpg.Pool) -> None:
    """Given PERSISTED_DOCUMENTS=registered,
    when an unregistered introspection-only query is sent with GraphiQL on, and with it off,
    then it runs with GraphiQL on (its schema explorer works) and is refused with it off; a document mixing
    introspection and data is refused either way."""
    introspection = (
        f"# {uuid.uuid4()}\nquery {{ __schema {{ queryType {{ name }} }} ...F }} fragment F on Query {{ __typename }}"
    )
    mixed = f"# {uuid.uuid4()}\nquery {{ __typename imageModels {{ modelKey }} }}"

    async with app_client(replace(settings, graphiql=True), mode=PERSISTED_REGISTERED) as http:
        allowed = await http.post("/graphql", json={"query": introspection})
        assert allowed.status_code == 200, allowed.text
        assert body_of(allowed)["data"]["__schema"]["queryType"]["name"] == "Query"
        refused = await http.post("/graphql", json={"query": mixed})
        assert refused.status_code == 403, refused.text

    async with app_client(replace(settings, graphiql=False), mode=PERSISTED_REGISTERED) as http:
        refused = await http.post("/graphql", json={"query": introspection})
        assert refused.status_code == 403, refused.text
        assert body_of(refused)["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_IN_LIST"


async def test_off_mode_answers_not_supported(settings: Settings, pool: asyncpg.Pool) -> None:
    """Given PERSISTED_DOCUMENTS=off,
    when the link sends a hash alone, and then (as it does on this answer) the plain document,
    then the first gets Apollo Server's PersistedQueryNotSupported (200, uncached) and the second runs."""
    document = unique_query()
    async with app_client(settings, mode=PERSISTED_OFF) as http:
        first = await http.post("/graphql", json=hash_only_post(document))
        plain = await http.post("/graphql", json={"operationName": "Models", "variables": {}, "query": document})

    assert first.status_code == 200, first.text
    assert body_of(first) == {
        "errors": [{"message": "PersistedQueryNotSupported", "extensions": {"code": "PERSISTED_QUERY_NOT_SUPPORTED"}}]
    }
    assert first.headers["cache-control"] == UNCACHED
    assert plain.status_code == 200 and body_of(plain)["data"]["imageModels"], plain.text
    assert await persisted_documents.find(pool, sha256(document)) is None



async def test_registered_mode_over_websockets(settings: Settings, pool: asyncpg.Pool) -> None:
    """Given PERSISTED_DOCUMENTS=registered served by uvicorn, and one registered document,
    when a graphql-ws client subscribes with an unregistered document, then with the registered one,
    then the first gets an error message PERSISTED_QUERY_NOT_IN_LIST with the socket left open, and the
    second runs."""
    registered, other = unique_query(), unique_query()
    async with pool.acquire() as connection:
        await persisted_documents.register(
            connection, [PersistedDocument(sha256(registered), registered, Source.REGISTERED, "Models")]
        )
    app = create_app(
        replace(settings, persisted_documents=PersistedDocumentsConfig(mode=PERSISTED_REGISTERED))
    )
    config = uvicorn_config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    async with serve_uvicorn(config) as served, GraphQLSocket.open(
        served.url("/graphql"), token=token_for(uuid.uuid4())
    ) as socket:
        refused_id = await socket.subscribe(other)
        refused = await socket.next_result()
        accepted_id = await socket.subscribe(registered)
        accepted = await socket.next_result()

    assert refused["id"] == refused_id and refused["type"] == "error", refused
    assert error_codes_of(refused) == ["PERSISTED_QUERY_NOT_IN_LIST"]
    assert accepted["id"] == accepted_id and accepted["type"] == "next", accepted
    assert accepted["payload"]["data"]["imageModels"]


async def test_an_eviction_racing_a_registration_keeps_the_registered_document(pool: asyncpg.Pool) -> None:
    """Given the least recently used automatic document, being registered (`portraits documents register`) in a
    transaction not yet committed,
    when a process keeps a new document and its eviction, past the cap, picks that one and waits for its row,
    then once the registration commits the eviction leaves it: a registered document is never dropped. (The
    eviction's subquery chose it as automatic; PostgreSQL re-checks only the DELETE's own condition on the row
    as committed, so without source = 'automatic' there the registered row was deleted.)"""
    await pool.execute("DELETE FROM persisted_documents")
    racing, newest = unique_query(), unique_query()
    await pool.execute(
        "INSERT INTO persisted_documents (sha256, body, source, last_used_at) "
        "VALUES ($1, $2, 'automatic', now() - interval '1 day')",
        sha256(racing), racing,
    )
    async with pool.acquire() as registering, pool.acquire() as keeping:

        async def keep_newest() -> bool:
            return await persisted_documents.save_automatic(keeping, sha256(newest), newest, max_count=1)

        async with registering.transaction():
            await registering.fetchval(persisted_documents.REGISTER, sha256(racing), racing, "Models")
            eviction = asyncio.create_task(keep_newest())
            waiting = await wait_for_lock(pool, keeping.get_server_pid())
        assert waiting, "the eviction never waited for the row being registered"
        assert await eviction is True

    registered = await persisted_documents.find(pool, sha256(racing), source=Source.REGISTERED)
    assert registered is not None and registered.body == racing
    assert await persisted_documents.find(pool, sha256(newest)) is not None


async def wait_for_lock(pool: asyncpg.Pool, pid: int, *, seconds: float = 5.0) -> bool:
    """True once the backend ``pid`` waits for a lock (within ``seconds``)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if await pool.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid) == "Lock":
            return True
        await asyncio.sleep(0.02)
    return False
