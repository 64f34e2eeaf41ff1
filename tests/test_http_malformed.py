"""Every malformed HTTP request gets a GraphQL error with a stable code, never a 500 nor plain text.

Statuses follow the GraphQL-over-HTTP spec for application/json: 400 for a
request that is not a GraphQL request (not JSON, not an object, fields of
the wrong type), 405 and 415 for methods and content types, and 200 once
the request is well-formed, whatever GraphQL then says.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import token_for
from tests.http_refusals import assert_no_leak, refusal_of

JSON = {"content-type": "application/json"}
VIEWER = b'{"query": "{ viewer { id } }"}'


async def post(client: httpx.AsyncClient, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.post("/graphql", content=body, headers=JSON if headers is None else headers)


def refusal(response: httpx.Response, status: int, code: str = "BAD_REQUEST") -> dict[str, Any]:
    return refusal_of(
        response.status_code, response.headers.get("content-type"), response.content, expected_status=status, code=code,
        request_id=response.headers.get("x-request-id"),
    )


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# Bodies that are not one GraphQL request object, each refused with 400 BAD_REQUEST.
NOT_A_REQUEST: dict[str, bytes] = {
    "empty": b"",
    "whitespace": b"  \n",
    "a batch": b'[{"query": "{ viewer { id } }"}, {"query": "{ viewer { id } }"}]',
    "an empty array": b"[]",
    "a number": b"3",
    "a string": b'"{ viewer { id } }"',
    "null": b"null",
    "true": b"true",
    "truncated": b'{"query": "{ viewer { id } }"',
    "trailing garbage": VIEWER + b" x",
    "NaN": b'{"query": "{ viewer { id } }", "variables": {"a": NaN}}',
    "Infinity": b'{"query": "{ viewer { id } }", "variables": {"a": Infinity}}',
    "single quotes": b"{'query': '{ viewer { id } }'}",
    # invalid UTF-8
    "a 0xff byte": b"\xff" + VIEWER,
    "a bad continuation byte": b'{"query": "{ viewer { id } }", "operationName": "\xc3("}',
    "an overlong encoding": b'{"query": "{ viewer { id } }", "operationName": "\xc0\xaf"}',
    "a surrogate encoded as UTF-8": b'{"query": "{ viewer { id } }", "operationName": "\xed\xa0\x80"}',
    "a UTF-16 body": VIEWER.decode().encode("utf-16"),
    "a byte order mark": b"\xef\xbb\xbf" + VIEWER,
    # numbers out of range
    "1e999": b'{"query": "{ viewer { id } }", "variables": {"a": 1e999}}',
    "-1e999": b'{"query": "{ viewer { id } }", "variables": {"a": -1e999}}',
    "an integer of 5000 digits": b'{"query": "{ viewer { id } }", "variables": {"a": ' + b"9" * 5000 + b"}}",
    "2**64 (orjson rounds it to a double)": b'{"query": "{ viewer { id } }", "variables": {"a": 18446744073709551616}}',
    "2**63": b'{"query": "{ viewer { id } }", "variables": {"a": [1, {"b": 9223372036854775808}]}}',
    "-2**63 - 1": b'{"query": "{ viewer { id } }", "extensions": {"a": -9223372036854775809}}',
    "an integer of 100000 digits": b'{"query": "{ viewer { id } }", "variables": {"a": -' + b"9" * 100_000 + b"}}",
    # nesting past orjson's bound (1024 levels)
    "variables nested 1025 levels": b'{"query": "{ viewer { id } }", "variables": {"a": ' + nested(1024) + b"}}",
    "variables nested 100000 levels": b'{"query": "{ viewer { id } }", "variables": {"a": ' + nested(100_000) + b"}}",
    "extensions nested 5000 levels": b'{"query": "{ viewer { id } }", "extensions": {"a": ' + nested(5000) + b"}}",
    # more arrays and objects than a request may hold (decoding them is what costs)
    "20001 brackets and braces": b'{"query": "{ viewer { id } }", "variables": {"a": [[]' + b",[]" * 19_995 + b"]}}",
    "700000 empty arrays (2 MiB)": b'{"query": "{ viewer { id } }", "variables": {"a": [' + b",[]" * 699_000 + b"]}}",
    # lone surrogates anywhere
    "a lone high surrogate in the query": b'{"query": "{ viewer { id } } # \\ud800"}',
    "a lone low surrogate in the query": b'{"query": "{ viewer { id \\udc00 } }"}',
    "a lone surrogate in a variable's value": b'{"query": "{ viewer { id } }", "variables": {"a": "x\\ud800"}}',
    "a lone surrogate in a variable's name": b'{"query": "{ viewer { id } }", "variables": {"\\ud800": 1}}',
    "a lone surrogate deep in variables": b'{"query": "{ viewer { id } }", "variables": {"a": [{"b": ["\\udfff"]}]}}',
    "a lone surrogate in operationName": b'{"query": "{ viewer { id } }", "operationName": "\\ud800"}',
    "a lone surrogate in extensions": b'{"query": "{ viewer { id } }", "extensions": {"\\ud800": "\\udc00x"}}',
    "a high surrogate before another high one": b'{"query": "{ viewer { id } }", "operationName": "\\ud800\\ud800"}',
    "reversed surrogates": b'{"query": "{ viewer { id } }", "operationName": "\\udc00\\ud800"}',
    # fields of the wrong JSON type
    "no query": b'{"variables": {}}',
    "an empty query": b'{"query": ""}',
    "a null query": b'{"query": null}',
    "a numeric query": b'{"query": 5}',
    "a query as a list": b'{"query": ["{ viewer { id } }"]}',
    "a query as an object": b'{"query": {"viewer": "id"}}',
    "variables as a string": b'{"query": "{ viewer { id } }", "variables": "{}"}',
    "variables as a list": b'{"query": "{ viewer { id } }", "variables": [1]}',
    "variables as a number": b'{"query": "{ viewer { id } }", "variables": 1}',
    "extensions as a string": b'{"query": "{ viewer { id } }", "extensions": "x"}',
    "extensions as a list": b'{"query": "{ viewer { id } }", "extensions": []}',
    "operationName as a number": b'{"query": "{ viewer { id } }", "operationName": 5}',
    "operationName as an object": b'{"query": "{ viewer { id } }", "operationName": {}}',
    "operationName as a list": b'{"query": "{ viewer { id } }", "operationName": ["a"]}',
    "operationName as a boolean": b'{"query": "{ viewer { id } }", "operationName": false}',
}


@pytest.mark.parametrize("body", NOT_A_REQUEST.values(), ids=NOT_A_REQUEST.keys())
async def test_a_body_that_is_not_a_graphql_request_is_a_400(client: httpx.AsyncClient, body: bytes) -> None:
    # given a POST whose application/json body is not one GraphQL request, when it is sent
    response = await post(client, body)

    # then it is refused as a bad request, with a GraphQL error body and nothing of the server's insides
    refusal(response, 400)


async def test_a_batch_is_refused_saying_so(client: httpx.AsyncClient) -> None:
    response = await post(client, b'[{"query": "{ viewer { id } }"}]')

    assert "Batched requests" in refusal(response, 400)["message"]


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/graphql",
        "application/xml",
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
        ";;;",
        "application/json\x01",
    ],
)
async def test_an_unsupported_content_type_is_a_415(client: httpx.AsyncClient, content_type: str | None) -> None:
    # given a GraphQL request that is not sent as UTF-8 application/json (uploads are not supported either)
    headers = {} if content_type is None else {"content-type": content_type}

    # when it is posted, then it is refused with 415 and a GraphQL error
    refusal(await post(client, VIEWER, headers), 415)


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON; Charset=UTF-8"]
)
async def test_json_in_utf8_is_served(client: httpx.AsyncClient, content_type: str) -> None:
    response = await post(client, VIEWER, {"content-type": content_type})

    assert response.status_code == 200
    assert response.json()["data"] == {"viewer": None}


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PROPFIND"])
async def test_another_method_is_a_405(client: httpx.AsyncClient, method: str) -> None:
    # given a request to /graphql with a method it does not serve, when it is sent
    response = await client.request(method, "/graphql", content=VIEWER, headers=JSON)

    # then it is refused with 405, the methods it serves, and (but for HEAD, which has no body) a GraphQL error
    assert response.headers["allow"] == "GET, POST"
    if method == "HEAD":
        assert response.status_code == 405
        return
    refusal(response, 405)


# GET requests whose parameters are not a GraphQL request: 400.
BAD_GET: dict[str, dict[str, str]] = {
    "variables that are not JSON": {"query": "{ viewer { id } }", "variables": "{bad"},
    "variables as an array": {"query": "{ viewer { id } }", "variables": "[1]"},
    "variables as a number": {"query": "{ viewer { id } }", "variables": "5"},
    "variables as a string": {"query": "{ viewer { id } }", "variables": '"x"'},
    "variables with a lone surrogate": {"query": "{ viewer { id } }", "variables": '{"a": "\\ud800"}'},
    "variables nested 1100 levels": {"query": "{ viewer { id } }", "variables": '{"a":' + nested(1100).decode() + "}"},
    "variables with 1e999": {"query": "{ viewer { id } }", "variables": '{"a": 1e999}'},
    "extensions that are not JSON": {"query": "{ viewer { id } }", "extensions": "{"},
    "extensions as a number": {"query": "{ viewer { id } }", "extensions": "5"},
    "no query": {"variables": "{}"},
    "an empty query": {"query": ""},
}


@pytest.mark.parametrize("params", BAD_GET.values(), ids=BAD_GET.keys())
async def test_a_get_that_is_not_a_graphql_request_is_a_400(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    # given a GET from a client that wants JSON (a browser asking for HTML without a query gets GraphiQL)
    response = await client.get("/graphql", params=params, headers={"accept": "application/json"})

    # then it is refused as a bad request, with a GraphQL error
    refusal(response, 400)


async def test_a_get_with_invalid_utf8_in_the_query_string_is_answered(client: httpx.AsyncClient) -> None:
    # given percent-escapes that are not UTF-8 (Starlette decodes them to U+FFFD), when they are sent
    response = await client.get("/graphql?query=%7B%20viewer%20%7B%20id%20%7D%20%7D%ff%ed%a0%80")

    # then GraphQL answers (the replacement character does not parse), with a 200 and its own error
    assert response.status_code == 200
    assert response.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"


async def test_a_mutation_over_get_is_a_405(client: httpx.AsyncClient) -> None:
    # given a mutation sent with GET (which must not change anything), when it is sent
    query = '{ __typename } mutation M { deleteCharacter(id: "00000000-0000-0000-0000-000000000000") }'
    response = await client.get("/graphql", params={"query": query, "operationName": "M"})

    # then it is refused with 405, as the GraphQL-over-HTTP spec says, pointing at POST
    refusal(response, 405)
    assert response.headers["allow"] == "POST"


async def test_an_unknown_operation_name_is_a_graphql_error(client: httpx.AsyncClient) -> None:
    # given a well-formed request naming an operation its document lacks, when it is posted
    response = await post(client, b'{"query": "query A { viewer { id } }", "operationName": "B"}')

    # then it is a GraphQL request error: 200 (application/json), no data, BAD_REQUEST
    refusal(response, 200)


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        ("application/json", "application/json"),
        ("application/graphql-response+json", "application/graphql-response+json"),
        ("application/graphql-response+json, application/json;q=0.9", "application/graphql-response+json"),
        ("*/*", "application/json"),
        ("", "application/graphql-response+json"),
    ],
)
async def test_an_accept_header_admitting_a_json_type_is_answered_in_it(
    client: httpx.AsyncClient, accept: str, media_type: str
) -> None:
    # given a query posted with an Accept header that admits one of the two JSON types (tests/test_graphql_over_http.py
    # has the negotiation's rules), when it is sent
    response = await post(client, VIEWER, {**JSON, "accept": accept})

    # then it is answered 200 in the negotiated type
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == media_type
    assert response.json()["data"] == {"viewer": None}


@pytest.mark.parametrize(
    "accept",
    ["text/html", "image/png", "multipart/mixed; deferSpec=20220824", "text/event-stream", ";;;,,,q=x"],
)
async def test_an_accept_header_admitting_no_json_type_is_a_406(client: httpx.AsyncClient, accept: str) -> None:
    # given a query posted with an Accept header that admits neither JSON type (no streams, no HTML), when it is sent
    response = await post(client, VIEWER, {**JSON, "accept": accept})

    # then it is refused 406 (the spec's RECOMMENDED answer) as a GraphQL error, naming the types served
    refusal(response, 406, "NOT_ACCEPTABLE")
    assert "application/graphql-response+json" in response.headers["accept"]


async def test_json_nested_within_the_bound_reaches_graphql_and_is_refused_there(
    client: httpx.AsyncClient, alice: uuid.UUID
) -> None:
    # given a variable nested 1000 levels deep (within orjson's 1024), for a String
    deep = nested(1000).decode()
    body = (
        '{"query": "query($a: String) { characters(after: $a) { edges { cursor } } }", "variables": {"a": '
        + deep + "}}"
    )

    # when it is posted
    response = await post(client, body.encode(), {**JSON, "authorization": f"Bearer {token_for(alice)}"})

    # then GraphQL refuses the variable (no RecursionError anywhere), with a 200 and BAD_USER_INPUT
    assert response.status_code == 200, response.text
    assert_no_leak(response.text)
    assert {error["extensions"]["code"] for error in response.json()["errors"]} == {"BAD_USER_INPUT"}


async def test_json_nested_within_the_bound_is_refused_by_the_input_checks(
    client: httpx.AsyncClient, alice: uuid.UUID
) -> None:
    # given sceneBehaviorRules nested 1000 levels deep (the limit is 10)
    query = (
        "mutation($r: JSON) { createCharacter(input: {name: \"N\", description: \"D\", contentRating: SFW, "
        "sceneBehaviorRules: $r}) { id } }"
    )
    body = orjson.dumps({"query": query})[:-1] + b', "variables": {"r": {"a": ' + nested(1000) + b"}}}"

    # when alice creates a character with them, then she is told the input nests too deep
    response = await post(client, body, {**JSON, "authorization": f"Bearer {token_for(alice)}"})

    assert response.status_code == 200, response.text
    assert [error["extensions"]["code"] for error in response.json()["errors"]] == ["BAD_USER_INPUT"]


async def test_a_request_with_as_many_arrays_and_objects_as_allowed_is_served(
    client: httpx.AsyncClient,
) -> None:
    # given 19995 empty arrays in variables: with the request, its query, variables and "a", 20000 brackets and braces
    body = b'{"query": "{ viewer { id } }", "variables": {"a": [[]' + b",[]" * 19_994 + b"]}}"

    # when it is posted, then GraphQL runs it
    response = await post(client, body)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"viewer": None}


async def test_64_bit_integers_and_long_digit_strings_are_served(client: httpx.AsyncClient) -> None:
    # given the 64-bit extremes, a double, and digits in a string (which make the decoder check integers again)
    body = (
        b'{"query": "{ viewer { id } }", "variables": {"a": 9223372036854775807, "b": -9223372036854775808, '
        b'"c": 1e300, "d": "12345678901234567890123456789"}}'
    )

    # when it is posted, then GraphQL runs it
    response = await post(client, body)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"viewer": None}


async def test_a_valid_surrogate_pair_is_kept(client: httpx.AsyncClient) -> None:
    # given an emoji written as a JSON surrogate pair in operationName, when it is posted
    response = await post(client, b'{"query": "query A { viewer { id } }", "operationName": "\\ud83d\\ude00"}')

    # then it is decoded as the one character it is (and is not the document's operation)
    error = refusal(response, 200)
    assert "\U0001f600" in error["message"]
