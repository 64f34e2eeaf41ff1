"""What a refused HTTP request must look like: a GraphQL error body, a stable code, nothing of the server's insides."""

from __future__ import annotations

from typing import Any

import orjson

# The media types a GraphQL refusal may come in (server/media_types.py).
JSON_TYPES = ("application/json", "application/graphql-response+json")
# Text that would betray the server's insides: stack traces, source paths, SQL, driver names.
LEAKS = ("Traceback", 'File "', ".py", "site-packages", "SELECT ", "INSERT ", "asyncpg", "psycopg", "/work/", "/tmp/")


def assert_no_leak(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} in {text[:300]!r}"


def refusal_of(
    status: int, content_type: str | None, body: bytes, *, expected_status: int, code: str, request_id: str | None
) -> dict[str, Any]:
    """The one error of a GraphQL refusal, checked: status, JSON, ``{"errors": [...]}`` with no data, the code.

    The media type is either JSON type /graphql answers in: which one a request gets is negotiated from its
    ``Accept`` header (server/media_types.py, tests/test_graphql_over_http.py), the body is the same.

    ``request_id`` is the response's ``X-Request-ID``: the error's ``extensions.requestId`` must be the same,
    and is taken out; a response without one (refused by the protocol layer, before the app) has neither.
    """
    text = body.decode("utf-8", "replace")
    assert status == expected_status, text[:300]
    assert content_type is not None and content_type.split(";")[0] in JSON_TYPES, content_type
    assert_no_leak(text)
    parsed = orjson.loads(body)
    assert isinstance(parsed, dict) and set(parsed) == {"errors"}, parsed
    errors = parsed["errors"]
    assert isinstance(errors, list) and len(errors) == 1, parsed
    error: dict[str, Any] = errors[0]
    assert isinstance(error["message"], str) and error["message"], error
    assert error["extensions"]["code"] == code, error
    assert error["extensions"].pop("requestId", None) == request_id, (error, request_id)
    return error
