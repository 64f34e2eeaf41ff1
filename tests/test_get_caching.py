"""What a shared cache (a CDN in front of ``GET /graphql``) may keep: public answers only, one per media type.

A persisted query's GET URL is the same for every client (the README invites CDNs to cache it), so an answer a
token shaped must say ``private, no-store``, and every GET answer must name the headers it depends on in ``Vary``.
"""

from __future__ import annotations

import uuid

import asyncpg
import httpx

from tests.conftest import token_for
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


async def test_a_public_answer_stays_cacheable_and_varies_on_what_shaped_it(client: httpx.AsyncClient) -> None:
    """Given a public query and no token,
    when it is asked for over GET in either media type,
    then the answers carry no private/no-store (a CDN may keep them) and vary on Accept and Authorization, so a
    cache keeps one per media type (their status codes differ) and none for a request with a token."""
    query = unique("query Models {\n  imageModels {\n    modelKey\n  }\n}")

    for accept in ("application/json", "application/graphql-response+json"):
        answer = await client.get("/graphql", params={"query": query}, headers={"accept": accept})

        assert answer.status_code == 200, answer.text
        assert answer.json()["data"]["imageModels"]
        cache_control = answer.headers.get("cache-control", "")
        assert "private" not in cache_control and "no-store" not in cache_control
        assert {"authorization", "accept"} <= vary_of(answer)


async def test_an_answer_with_errors_is_not_kept(client: httpx.AsyncClient) -> None:
    """Given a GET without a token for a user field (an UNAUTHENTICATED error in a 200 application/json answer),
    when it is answered,
    then it says no-store: a cache must not keep a refusal or a passing failure for everyone."""
    answer = await client.get(
        "/graphql", params={"query": unique("{ viewer { id } }")}, headers={"accept": "application/json"}
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert "no-store" in answer.headers.get("cache-control", "")


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
