"""A GraphQL-over-HTTP request read strictly: JSON that is not a request is refused before GraphQL sees it.

Strawberry decodes with ``json.loads``, which lets through what no client
means and our stack cannot carry: lone surrogates (``"\\ud800"``: PostgreSQL
and our JSON encoder refuse them later, as a 500), integers of thousands of
digits (``int()`` refuses them past 4300, as a 500), nesting deep enough to
raise ``RecursionError``; and it answers a JSON body that is not an object
with an ``AttributeError``. orjson refuses the first three while decoding
(invalid UTF-8 and lone surrogates, numbers that overflow a double, nesting
past 1024 levels), but reads an integer past 64 bits as a double, silently
rounded: where the text has a run of 19 digits (2**63 has 19), it is read
again by ``json.loads`` with an exact integer check, and such an integer is
refused too. The shape is checked here. Every refusal is a
``RequestRefused``: a 4xx GraphQL error body (server/request_errors.py).

Building a Python list or dict is most of what decoding costs: 2 MiB of
``[],[],...`` took orjson 170 ms of CPU, with the event loop stalled. So a
body with more than ``MAX_JSON_CONTAINERS`` brackets and braces is refused
before it is decoded (counted in C, about 1 ms for 2 MiB; brackets inside
strings count too), and a websocket message likewise. The largest legal request holds a few thousand: a
2000-token document and a 16 KiB ``sceneBehaviorRules``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from email.message import Message
from typing import Any

import orjson
from cross_web import HTTPException
from strawberry.http import GraphQLRequestData
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from graph.document_cost import document_too_long
from graph.schema import MAX_DOCUMENT_CHARS
from server.request_errors import RequestRefused

JSON_MEDIA_TYPE = "application/json"
# Arrays and objects one request may hold (README: Limits).
MAX_JSON_CONTAINERS = 20_000
# Sent with 405: the methods /graphql answers.
ALLOWED_METHODS = "GET, POST"


# Every digit made "0": a run of 19 zeros is then found by a plain substring search, in C.
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_DIGIT_RUN = b"0" * 19
INT64 = range(-(2**63), 2**63)


def decode_json(data: str | bytes) -> Any:
    """Strict JSON: UTF-8 only, no lone surrogates, no NaN or infinities, at most 1024 levels, 64-bit integers,
    at most ``MAX_JSON_CONTAINERS`` arrays and objects.

    Raises ``json.JSONDecodeError`` (orjson's is one), as strawberry's websocket handlers expect.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_CONTAINERS:
        raise json.JSONDecodeError(f"more than {MAX_JSON_CONTAINERS} arrays and objects", "", 0)
    value = orjson.loads(raw)
    if raw.translate(_DIGITS_AS_ZERO).find(_LONG_DIGIT_RUN) == -1:
        return value
    try:
        return json.loads(raw, parse_int=_int64)
    except RecursionError:  # json.loads recurses in C; orjson let up to 1024 levels through
        raise json.JSONDecodeError("nesting too deep", "", 0) from None


def _int64(text: str) -> int:
    number = int(text)  # at most ~310 digits: orjson refused longer numbers as infinite
    if number not in INT64:
        raise json.JSONDecodeError("an integer outside the 64-bit range", text, 0)
    return number


def decode_request_json(data: bytes, what: str) -> Any:
    """``decode_json``, its refusals as a 400."""
    try:
        return decode_json(data)
    except json.JSONDecodeError as error:
        raise refused(f"{what} is not valid JSON: {_reason(error)}") from None


def refused(message: str, status_code: int = 400) -> RequestRefused:
    return RequestRefused(status_code, message)


def request_from_body(content_type: str | None, body: bytes) -> GraphQLRequestData:
    """A POST: ``application/json`` (UTF-8) holding one request object."""
    media_type, params = _media_type(content_type)
    if media_type != JSON_MEDIA_TYPE:
        raise refused(
            f"Unsupported Content-Type {media_type or '(none)'!r}: send the request as application/json", 415
        )
    charset = params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise refused(f"Unsupported charset {charset!r}: send the request as UTF-8 application/json", 415)
    data = decode_request_json(body, "The request body")
    if isinstance(data, list):
        raise refused("Batched requests (a JSON array) are not supported: send one operation per request")
    if not isinstance(data, dict):
        raise refused(f"The request body must be a JSON object, not {json_type(data)}")
    return request_from_fields(data)


def request_from_query(params: Mapping[str, Any]) -> GraphQLRequestData:
    """A GET: ``query``, ``operationName``, and ``variables`` and ``extensions`` as JSON text."""
    fields: dict[str, Any] = {}
    for name in ("query", "operationName"):
        if name in params:
            fields[name] = params[name]
    for name in ("variables", "extensions"):
        text = params.get(name)
        if text:
            # Starlette decoded the percent-escapes as UTF-8 (U+FFFD for bad ones): it encodes back.
            fields[name] = decode_request_json(str(text).encode(), f"The {name} parameter")
    return request_from_fields(fields)


def request_from_fields(data: Mapping[str, Any]) -> GraphQLRequestData:
    """The spec's request: ``query`` a string, ``operationName`` a string or null, the others objects or null."""
    query = data.get("query")
    if query is None or query == "":
        if _persisted_query(data) is None:
            raise refused("The request has no GraphQL query: send it as `query`")
        query = None  # a persisted query's hash alone (server/persisted_queries.py resolves it)
    elif not isinstance(query, str):
        raise refused(f"`query` must be a string, not {json_type(query)}")
    if query is not None and (too_long := document_too_long(query, MAX_DOCUMENT_CHARS)) is not None:
        # The schema refuses it too, but only once strawberry has lexed it: 2 MiB of comment cost 230-290 ms.
        measured = dict(too_long.extensions or {})
        code = str(measured.pop("code"))
        raise RequestRefused(200, too_long.message, code=code, extensions=measured)
    operation_name = data.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise refused(f"`operationName` must be a string or null, not {json_type(operation_name)}")
    variables = data.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise refused(f"`variables` must be an object or null, not {json_type(variables)}")
    extensions = data.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise refused(f"`extensions` must be an object or null, not {json_type(extensions)}")
    return GraphQLRequestData(
        query=query, variables=variables, operation_name=operation_name, extensions=extensions, protocol="http"
    )


def _persisted_query(data: Mapping[str, Any]) -> object:
    """The ``extensions.persistedQuery`` of a request (Apollo's automatic persisted queries), or None."""
    extensions = data.get("extensions")
    return extensions.get("persistedQuery") if isinstance(extensions, dict) else None


def _media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """The media type, lowercased, and its parameters, as ``email.message`` parses them (strawberry's way).

    Split by hand when nothing in the value needs its rules (no quotes or escapes, no RFC 2231 ``name*=``
    parameter, every parameter ``name=value``): the same answer, in a tenth of the time (``email.message`` cost
    ~12 us a request).
    """
    if not content_type:
        return "", {}
    if '"' in content_type or "\\" in content_type or "*" in content_type:
        return _media_type_by_email(content_type)
    first, *rest = content_type.split(";")
    if "=" in first:
        return _media_type_by_email(content_type)
    params: dict[str, str] = {}
    for part in rest:
        name, equals, value = part.partition("=")
        if not equals:
            return _media_type_by_email(content_type)
        params[name.strip().lower()] = value.strip()
    return first.strip().lower(), params


def _media_type_by_email(content_type: str) -> tuple[str, dict[str, str]]:
    message = Message()
    message["content-type"] = content_type
    params = message.get_params() or [("", "")]
    return params[0][0].lower(), {str(key).lower(): str(value) for key, value in params[1:]}


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages that never echo the value (websocket ones too)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _reason(error: json.JSONDecodeError) -> str:
    """orjson's message (what is wrong and where), never the input itself."""
    return str(error)


def refusal_of(error: HTTPException) -> RequestRefused:
    """What strawberry's view raises for a request it will not run, as our GraphQL error answer.

    - GET for a mutation: 405, as the GraphQL-over-HTTP spec says, with ``Allow: POST``;
    - an operation name the document lacks: the request is well-formed, so 200 with the error, as for any
      other GraphQL request error (400 in application/graphql-response+json: request_errors.refusal_response);
    - another method than GET or POST: 405 with ``Allow``;
    - anything else strawberry refuses: its status, BAD_REQUEST.
    """
    if isinstance(error, RequestRefused):
        return error
    cause = error.__cause__
    if isinstance(cause, InvalidOperationTypeError):
        return RequestRefused(405, error.reason, headers={"allow": "POST"})
    if isinstance(cause, CannotGetOperationTypeError):
        return RequestRefused(200, error.reason)
    if error.status_code == 405:
        return RequestRefused(405, f"/graphql answers {ALLOWED_METHODS} only", headers={"allow": ALLOWED_METHODS})
    return RequestRefused(error.status_code, error.reason)
