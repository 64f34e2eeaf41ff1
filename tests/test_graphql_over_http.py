"""GraphQL over HTTP: the media type an answer comes in, and the status each kind of answer gets in it.

application/graphql-response+json (the client names it, or sends no Accept):
200 when the operation ran (field errors included), 400 with no ``data``
entry for a request error (the document does not parse or validate, its
variables do not coerce, several operations and no operationName).
application/json (named, or a wildcard alone: httpx sends ``*/*``): 200 for
every well-formed request, request errors with ``"data": null`` as before.
Refusals of requests that are not GraphQL requests keep their 4xx in both.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from server.media_types import GRAPHQL_RESPONSE_JSON, JSON, response_media_type
from tests.conftest import token_for
from tests.realtime_support import PROTOCOLS, TRANSPORT_WS, GraphQLSocket, error_codes_of

GRAPHQL_TYPE = "application/graphql-response+json; charset=utf-8"
ACCEPT_GRAPHQL = {"accept": GRAPHQL_RESPONSE_JSON}
ACCEPT_JSON = {"accept": JSON}
TWO_QUERIES = "query First { viewer { id } } query Second { __typename }"


async def post(
    client: httpx.AsyncClient, body: dict[str, Any], accept: dict[str, str], user: uuid.UUID | None = None
) -> httpx.Response:
    headers = {**accept, **({} if user is None else {"authorization": f"Bearer {token_for(user)}"})}
    return await client.post("/graphql", json=body, headers=headers)


def request_error(response: httpx.Response, status: int, content_type: str, code: str) -> dict[str, Any]:
    """The body of a GraphQL request error, checked: status, media type, one error with ``code``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == content_type
    body: dict[str, Any] = response.json()
    assert [error["extensions"]["code"] for error in body["errors"]] == [code], body
    return body


# The negotiation itself (server/media_types.py), header by header.


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, GRAPHQL_RESPONSE_JSON),  # no Accept: the spec's default since its 2025 watershed
        ("", GRAPHQL_RESPONSE_JSON),
        ("application/graphql-response+json", GRAPHQL_RESPONSE_JSON),
        ("application/json", JSON),
        ("*/*", JSON),  # a wildcard alone: legacy clients (curl, fetch, httpx) keep application/json
        ("application/*", JSON),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", JSON),  # a browser's address bar
        ("application/graphql-response+json, application/json;q=0.9", GRAPHQL_RESPONSE_JSON),  # Apollo Client
        ("application/json, application/graphql-response+json", GRAPHQL_RESPONSE_JSON),  # both named alike
        ("application/graphql-response+json;q=0.5, application/json", JSON),  # q decides first
        ("application/graphql-response+json, */*", GRAPHQL_RESPONSE_JSON),  # named beats a wildcard
        ("application/json;q=0, */*", GRAPHQL_RESPONSE_JSON),  # q=0 refuses the type it names
        ("APPLICATION/GRAPHQL-RESPONSE+JSON; CHARSET=UTF-8", GRAPHQL_RESPONSE_JSON),
        ("application/graphql-response+json; charset=latin1, application/json", JSON),  # UTF-8 only
        ("text/html", None),
        ("application/json;q=0", None),
        ("multipart/mixed, text/event-stream", None),
        ("application/json;q=abc", None),
    ],
)
def test_the_answer_type_is_negotiated_from_accept(accept: str | None, expected: str | None) -> None:
    """Given an Accept header, when the answer's media type is chosen, then it is the spec's choice (None: 406)."""
    assert response_media_type(accept) == expected


# Answers in each type.


async def test_a_query_is_answered_200_in_the_type_the_client_accepts(client: httpx.AsyncClient) -> None:
    """Given a valid query, when it is posted accepting either JSON type,
    then each is answered 200 with data, in the type it asked for."""
    graphql = await post(client, {"query": "{ __typename }"}, ACCEPT_GRAPHQL)
    json = await post(client, {"query": "{ __typename }"}, ACCEPT_JSON)

    assert (graphql.status_code, graphql.headers["content-type"]) == (200, GRAPHQL_TYPE)
    assert (json.status_code, json.headers["content-type"]) == (200, JSON)
    assert graphql.json() == json.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    ("query", "variables", "code"),
    [
        ("{ viewer { id }", None, "GRAPHQL_PARSE_FAILED"),
        ("{ viewer { noSuchField } }", None, "GRAPHQL_VALIDATION_FAILED"),
        ("query Q($id: ID!) { character(id: $id) { id } }", {"id": None}, "BAD_USER_INPUT"),
        ("query Q($id: ID!) { character(id: $id) { id } }", {"id": {"an": "object"}}, "BAD_USER_INPUT"),
        ("query Q($id: ID!) { character(id: $id) { id } }", {}, "BAD_USER_INPUT"),
    ],
    ids=["parse", "validation", "null variable", "object for an ID", "missing variable"],
)
async def test_a_request_error_is_400_without_data_in_graphql_response_json_and_200_in_json(
    client: httpx.AsyncClient, alice: uuid.UUID, query: str, variables: dict[str, Any] | None, code: str
) -> None:
    """Given a document that does not parse or validate, or variables that do not coerce,
    when it is posted accepting application/graphql-response+json, then it is a 400 with no data entry;
    when it is posted accepting application/json, then it is a 200 with data null (as before)."""
    body = {"query": query, "variables": variables}

    graphql = request_error(await post(client, body, ACCEPT_GRAPHQL, alice), 400, GRAPHQL_TYPE, code)
    json = request_error(await post(client, body, ACCEPT_JSON, alice), 200, JSON, code)

    assert "data" not in graphql
    assert json["data"] is None
    assert graphql["errors"][0]["message"] == json["errors"][0]["message"]


async def test_a_field_error_stays_200_with_data(client: httpx.AsyncClient, alice: uuid.UUID) -> None:
    """Given a valid query whose resolver fails (a character that does not exist),
    when it is posted accepting application/graphql-response+json,
    then it ran: 200, with data and the field's error (a partial response, not a request error)."""
    query = {"query": "query Q($id: ID!) { character(id: $id) { id } }", "variables": {"id": str(uuid.uuid4())}}

    response = await post(client, query, ACCEPT_GRAPHQL, alice)

    assert (response.status_code, response.headers["content-type"]) == (200, GRAPHQL_TYPE)
    body = response.json()
    assert "data" in body
    assert [error["extensions"]["code"] for error in body["errors"]] == ["NOT_FOUND"]


async def test_a_request_without_accept_is_answered_in_graphql_response_json(client: httpx.AsyncClient) -> None:
    """Given a request with no Accept header at all, when a document that does not validate is posted,
    then it is answered as application/graphql-response+json: 400 without data."""
    request = client.build_request("POST", "/graphql", json={"query": "{ nope }"})
    del request.headers["accept"]

    body = request_error(await client.send(request), 400, GRAPHQL_TYPE, "GRAPHQL_VALIDATION_FAILED")

    assert "data" not in body


async def test_a_subscription_over_http_is_a_request_error(client: httpx.AsyncClient) -> None:
    """Given a subscription, when it is posted, then it is refused as a request error in either type
    (it runs over a websocket), nothing subscribed."""
    body = {"query": "subscription { characterImageUpdated { id } }"}

    graphql = request_error(await post(client, body, ACCEPT_GRAPHQL), 400, GRAPHQL_TYPE, "BAD_REQUEST")
    request_error(await post(client, body, ACCEPT_JSON), 200, JSON, "BAD_REQUEST")

    assert "data" not in graphql
    assert "websocket" in graphql["errors"][0]["message"]


async def test_a_document_over_the_length_limit_is_a_request_error(client: httpx.AsyncClient) -> None:
    """Given a document over the character limit (refused before it is parsed), when it is posted,
    then it is a 400 in application/graphql-response+json and a 200 in application/json, with no data in either."""
    body = {"query": "{ __typename }\n#" + "x" * 100_000}

    graphql = request_error(await post(client, body, ACCEPT_GRAPHQL), 400, GRAPHQL_TYPE, "GRAPHQL_VALIDATION_FAILED")
    json = request_error(await post(client, body, ACCEPT_JSON), 200, JSON, "GRAPHQL_VALIDATION_FAILED")

    assert "data" not in graphql and "data" not in json


@pytest.mark.parametrize(("accept", "content_type"), [(ACCEPT_GRAPHQL, GRAPHQL_TYPE), (ACCEPT_JSON, JSON)])
async def test_a_body_that_is_not_a_graphql_request_keeps_its_400(
    client: httpx.AsyncClient, accept: dict[str, str], content_type: str
) -> None:
    """Given a JSON body that is not a GraphQL request (a batch, an object without query), when it is posted,
    then it is a 400 BAD_REQUEST GraphQL error in the negotiated type, whichever it is."""
    batch = [{"query": "{ __typename }"}, {"query": "{ __typename }"}]

    batched = await client.post("/graphql", json=batch, headers=accept)
    no_query = await client.post("/graphql", json={"qeury": "{ __typename }"}, headers=accept)

    assert "Batched requests" in request_error(batched, 400, content_type, "BAD_REQUEST")["errors"][0]["message"]
    assert "data" not in request_error(no_query, 400, content_type, "BAD_REQUEST")


# GET


async def test_a_query_over_get_is_answered_in_the_negotiated_type(client: httpx.AsyncClient) -> None:
    """Given a query with variables in a GET's query string, when it is sent accepting either type,
    then it runs: 200 with data, in the type asked for."""
    params = {"query": "query T($name: String!) { __type(name: $name) { name } }", "variables": '{"name": "Query"}'}

    graphql = await client.get("/graphql", params=params, headers=ACCEPT_GRAPHQL)
    json = await client.get("/graphql", params=params, headers=ACCEPT_JSON)

    assert (graphql.status_code, graphql.headers["content-type"]) == (200, GRAPHQL_TYPE)
    assert (json.status_code, json.headers["content-type"]) == (200, JSON)
    assert graphql.json() == json.json() == {"data": {"__type": {"name": "Query"}}}


async def test_every_answer_of_graphql_varies_by_accept(client: httpx.AsyncClient) -> None:
    """Given GET queries (which a CDN may keep), a request error, a refusal and a bad token, when each is answered,
    then each says ``Vary: Accept``: its media type, and a request error's status, depend on that header, so a
    cache must not give the application/json answer to a client that asked for the other type."""
    params = {"query": "{ __typename }"}
    answers = [
        await client.get("/graphql", params=params, headers=ACCEPT_GRAPHQL),
        await client.get("/graphql", params=params, headers=ACCEPT_JSON),
        await client.get("/graphql", params={"query": "{ nope }"}, headers=ACCEPT_GRAPHQL),
        await client.get("/graphql", params={"query": "{ __typename }", "variables": "[]"}, headers=ACCEPT_JSON),
        await client.get("/graphql", params=params, headers={**ACCEPT_JSON, "authorization": "Bearer not-a-jwt"}),
    ]

    assert [response.status_code for response in answers] == [200, 200, 400, 400, 401]
    varies = [[name.strip() for name in response.headers.get("vary", "").split(",")] for response in answers]
    assert all("Accept" in names for names in varies), varies  # (beside CORS's Origin)


async def test_a_get_that_does_not_validate_is_a_400_in_graphql_response_json(client: httpx.AsyncClient) -> None:
    """Given a GET whose document does not validate, when it is sent accepting application/graphql-response+json,
    then it is a 400 without data."""
    response = await client.get("/graphql", params={"query": "{ nope }"}, headers=ACCEPT_GRAPHQL)

    assert "data" not in request_error(response, 400, GRAPHQL_TYPE, "GRAPHQL_VALIDATION_FAILED")


@pytest.mark.parametrize(("accept", "content_type"), [(ACCEPT_GRAPHQL, GRAPHQL_TYPE), (ACCEPT_JSON, JSON)])
async def test_a_mutation_over_get_is_a_405_in_either_type(
    client: httpx.AsyncClient, pool: asyncpg.Pool, alice: uuid.UUID, accept: dict[str, str], content_type: str
) -> None:
    """Given a mutation in a GET's query string, when it is sent, then it is refused 405 with Allow: POST
    (the spec: GET must not run mutations), in the negotiated type, and nothing was created."""
    mutation = 'mutation { createCharacter(input: {name: "Via GET", description: "d"}) { id } }'
    headers = {**accept, "authorization": f"Bearer {token_for(alice)}"}

    response = await client.get("/graphql", params={"query": mutation}, headers=headers)

    request_error(response, 405, content_type, "BAD_REQUEST")
    assert response.headers["allow"] == "POST"
    assert await pool.fetchval("SELECT count(*) FROM characters WHERE user_id = $1", alice) == 0


async def test_graphiql_is_still_served_to_a_browser(client: httpx.AsyncClient) -> None:
    """Given a browser asking for /graphql as a page (Accept: text/html, no query), when it is sent,
    then GraphiQL's page is served, not a 406 (the page is HTML; a query with the same Accept is a 406)."""
    page = await client.get("/graphql", headers={"accept": "text/html"})
    query = await client.get("/graphql", params={"query": "{ __typename }"}, headers={"accept": "text/html"})

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert query.status_code == 406


# Several operations, no operationName: the spec's GetOperation() raises; nothing runs.


async def test_several_operations_without_a_name_are_a_request_error(client: httpx.AsyncClient) -> None:
    """Given a document of two named operations, when it is posted without operationName,
    then it is a request error naming the problem (400 without data, or 200 in application/json);
    with operationName, the named one runs."""
    unnamed = {"query": TWO_QUERIES}

    graphql = request_error(await post(client, unnamed, ACCEPT_GRAPHQL), 400, GRAPHQL_TYPE, "BAD_REQUEST")
    request_error(await post(client, unnamed, ACCEPT_JSON), 200, JSON, "BAD_REQUEST")
    named = await post(client, {**unnamed, "operationName": "Second"}, ACCEPT_GRAPHQL)

    assert "data" not in graphql
    assert "operationName" in graphql["errors"][0]["message"]
    assert named.json() == {"data": {"__typename": "Query"}}


async def test_a_mutation_first_among_several_operations_does_not_run_without_a_name(
    client: httpx.AsyncClient, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    """Given a mutation followed by a query in one document, when it is posted without operationName,
    then it is refused and the mutation did not run (strawberry used to run the first operation)."""
    document = (
        'mutation Create { createCharacter(input: {name: "First op", description: "d"}) { id } } '
        "query Read { viewer { id } }"
    )

    request_error(await post(client, {"query": document}, ACCEPT_GRAPHQL, alice), 400, GRAPHQL_TYPE, "BAD_REQUEST")

    assert await pool.fetchval("SELECT count(*) FROM characters WHERE user_id = $1", alice) == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_several_subscriptions_without_a_name_are_an_error_on_the_socket(
    live_server: str, alice: uuid.UUID, protocol: str
) -> None:
    """Given a websocket and a document of two subscriptions, when it is subscribed without operationName,
    then the operation gets an error message (BAD_REQUEST), nothing runs, and the socket stays usable:
    the same document with operationName is accepted."""
    document = (
        "subscription One { characterImageUpdated { id } } subscription Two { characterImageUpdated { name } }"
    )
    kind = "subscribe" if protocol == TRANSPORT_WS else "start"
    async with GraphQLSocket.open(live_server, protocol=protocol, token=token_for(alice)) as socket:
        await socket.send({"id": "1", "type": kind, "payload": {"query": document}})
        refused = await socket.next_result()
        await socket.send({"id": "2", "type": kind, "payload": {"query": document, "operationName": "Two"}})
        await socket.send({"id": "3", "type": kind, "payload": {"query": "{ nope }"}})  # answered after "2" started
        after = await socket.next_result()

    assert (refused["id"], refused["type"]) == ("1", "error")
    assert error_codes_of(refused) == ["BAD_REQUEST"]
    # "2" is live (a subscription sends nothing until an image changes): the next message is "3"'s error
    assert (after["id"], after["type"]) == ("3", "error"), after


@pytest.mark.parametrize(("accept", "content_type"), [(ACCEPT_GRAPHQL, GRAPHQL_TYPE), (ACCEPT_JSON, JSON)])
async def test_a_bad_token_is_a_401_in_the_negotiated_type(
    client: httpx.AsyncClient, accept: dict[str, str], content_type: str
) -> None:
    """Given a request with a token that does not verify, when it is posted, then it is refused 401 UNAUTHENTICATED
    in the negotiated type: without data in application/graphql-response+json, with data null in application/json."""
    headers = {**accept, "authorization": "Bearer not-a-token"}

    response = await client.post("/graphql", json={"query": "{ __typename }"}, headers=headers)

    body = request_error(response, 401, content_type, "UNAUTHENTICATED")
    assert ("data" in body) == (content_type == JSON)


async def test_an_operation_name_the_document_lacks_is_a_request_error(client: httpx.AsyncClient) -> None:
    """Given a document and an operationName it does not hold, when it is posted,
    then it is a request error: 400 without data in application/graphql-response+json, 200 in application/json."""
    body = {"query": "query A { __typename }", "operationName": "B"}

    graphql = request_error(await post(client, body, ACCEPT_GRAPHQL), 400, GRAPHQL_TYPE, "BAD_REQUEST")
    request_error(await post(client, body, ACCEPT_JSON), 200, JSON, "BAD_REQUEST")

    assert "data" not in graphql
