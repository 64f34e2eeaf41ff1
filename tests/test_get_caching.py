"""What a shared cache (a CDN in front of ``GET /graphql``) may keep: public answers only, one per media type.

A persisted query's GET URL is the same for every client (the README invites CDNs to cache it), so an answer a
token shaped must say ``private, no-store``, and every GET answer must name the headers it depends on in ``Vary``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

import asyncpg
import httpx
import jwt
from asgi_lifespan import LifespanManager

from server.app import create_app
from server.settings import Settings
from tests.conftest import token_for
from tests.support import TEST_JWT_SECRET
from tests.test_persisted_queries import LINK_ACCEPT, body_of, hash_only_get, with_query

MINE = "query Mine {\n  characters(first: 5) {\n    totalCount\n  }\n}"


def unique(document: str) -> str:
    """The document with a comment no other test sends, so its hash is new."""
    return f"# {uuid.uuid4()}\n{document}"


def vary_of(response: httpx.Response) -> set[str]:
    names = [name.strip().lower() for name in response.headers.get("vary", "").split(",") if name.strip()]
    assert len(names) == len(set(names)), f"a name repeated in Vary: {names}"
    return set(names)


async def test_an_answer_for_a_token_is_never_kept_by_a_shared_cache(
    client: httpx.AsyncClient, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    """Given a persisted query of the viewer's own characters, registered by POST,
    when Alice GETs it by hash with her token (the URL any other user's GET of it has too),
    then her answer says private, no-store and varies on Authorization and Accept."""
    document = unique(MINE)
    headers = {**LINK_ACCEPT, "authorization": f"Bearer {token_for(alice)}"}
    registered = await client.post("/graphql", json=with_query(document, "Mine"), headers=headers)
    assert registered.status_code == 200, registered.text

    answer = await client.get("/graphql", params=hash_only_get(document, "Mine"), headers=headers)

    assert answer.status_code == 200, answer.text
    assert body_of(answer) == {"data": {"characters": {"totalCount": 0}}}
    directives = {part.strip() for part in answer.headers["cache-control"].split(",")}
    assert {"private", "no-store"} <= directives
    assert {"authorization", "accept"} <= vary_of(answer)


async def test_a_public_answer_is_kept_a_minute_and_varies_on_what_shaped_it(client: httpx.AsyncClient) -> None:
    """Given a public query and no token,
    when it is asked for over GET in either media type, from no page, an allowed page's origin and another's,
    then every answer says public, max-age=60 (PUBLIC_GET_MAX_AGE_SECONDS' default: not the CDN's own default, a
    day for some) and varies on Accept, Authorization and Origin, so a cache keeps one per media type (their status
    codes differ), one per origin (CORS's headers differ) and none for a request with a token."""
    query = unique("query Models {\n  imageModels {\n    modelKey\n  }\n}")

    for accept in ("application/json", "application/graphql-response+json"):
        for origin in ({}, {"origin": "http://localhost:5173"}, {"origin": "https://elsewhere.example"}):
            answer = await client.get("/graphql", params={"query": query}, headers={"accept": accept, **origin})

            assert answer.status_code == 200, answer.text
            assert answer.json()["data"]["imageModels"]
            assert answer.headers["cache-control"] == "public, max-age=60"
            assert {"authorization", "accept", "origin"} <= vary_of(answer)


async def test_an_anonymous_token_makes_the_answer_private(client: httpx.AsyncClient) -> None:
    """Given a validly signed anon-role token (Supabase's anon key: it names no user, so the query runs as public),
    when a public query is asked for over GET with it,
    then the answer is the public one but says private, no-store: a cache cannot tell such a token from a user's,
    and an answer must not depend on a header's value that only the server can read."""
    token = jwt.encode(
        {"role": "anon", "iss": "supabase", "exp": int(time.time()) + 3600}, TEST_JWT_SECRET, algorithm="HS256"
    )
    query = unique("query Models {\n  imageModels {\n    modelKey\n  }\n}")

    answer = await client.get(
        "/graphql", params={"query": query}, headers={"accept": "application/json", "authorization": f"Bearer {token}"}
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["imageModels"] and "errors" not in answer.json()
    assert answer.headers["cache-control"] == "private, no-store"
    assert "authorization" in vary_of(answer)


async def test_the_public_max_age_is_a_setting(settings: Settings) -> None:
    """Given servers with PUBLIC_GET_MAX_AGE_SECONDS at 300 and at 0,
    when each answers a public GET,
    then the first says public, max-age=300 and the second no-cache (a CDN may keep it but asks each time)."""
    query = unique("query Models {\n  imageModels {\n    modelKey\n  }\n}")
    said = {}

    for seconds in (300, 0):
        app = create_app(replace(settings, public_get_max_age_seconds=seconds))
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                answer = await http.get("/graphql", params={"query": query}, headers={"accept": "application/json"})
        assert answer.status_code == 200, answer.text
        said[seconds] = answer.headers["cache-control"]

    assert said == {300: "public, max-age=300", 0: "no-cache"}


async def test_a_mutation_over_get_is_refused_and_not_kept(client: httpx.AsyncClient) -> None:
    """Given a mutation and no token,
    when it is sent over GET,
    then it is refused 405 before it runs, and the refusal says no-store (a 405 is cacheable by default): only a
    query's answer is ever public."""
    mutation = unique('mutation { deleteCharacter(id: "00000000-0000-0000-0000-000000000000") }')

    answer = await client.get("/graphql", params={"query": mutation}, headers={"accept": "application/json"})

    assert answer.status_code == 405, answer.text
    assert answer.headers["cache-control"] == "no-store"


async def test_an_answer_with_errors_is_not_kept(client: httpx.AsyncClient) -> None:
    """Given a GET without a token for a user field (an UNAUTHENTICATED error in a 200 application/json answer),
    when it is answered,
    then it says no-store, not the public max-age: a cache must not keep a refusal or a passing failure for
    everyone."""
    answer = await client.get(
        "/graphql", params={"query": unique("{ viewer { id } }")}, headers={"accept": "application/json"}
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert answer.headers["cache-control"] == "no-store"


async def test_a_persisted_querys_url_never_answers_graphiqls_page(client: httpx.AsyncClient) -> None:
    """Given a public query registered by POST,
    when its hash-only GET URL (the one a CDN keys on) is asked for with curl's Accept: */* and a browser's,
    then both get the query's JSON, not GraphiQL's page, so nobody can make a CDN keep the page at that URL for
    every client of the query; the page itself, at /graphql, varies on Accept."""
    document = unique("query Models {\n  imageModels {\n    modelKey\n  }\n}")
    registered = await client.post("/graphql", json=with_query(document))
    assert registered.status_code == 200, registered.text

    for accept in ("*/*", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"):
        answer = await client.get("/graphql", params=hash_only_get(document), headers={"accept": accept})

        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/json")
        assert body_of(answer) == body_of(registered)

    page = await client.get("/graphql", headers={"accept": "text/html"})
    assert page.headers["content-type"].startswith("text/html")
    assert "accept" in vary_of(page)
