"""Every GraphQL error leaves with a stable ``extensions.code``; unexpected ones leave masked.

- ``PortraitsError`` (resolvers/errors.py): message and code as raised.
- graphql-core's own errors (syntax, validation, variable coercion): their
  message, which names only the query, and a code for each kind.
- an operation the transport does not carry (a query over graphql-ws), a
  request with no query, an operationName the document does not hold:
  BAD_REQUEST, saying what is wrong.
- the database being unreachable: SERVICE_UNAVAILABLE, a retryable answer.
- anything else: "Internal server error." with INTERNAL_SERVER_ERROR; the log
  keeps the exception and its traceback, the client never sees a stack trace
  or SQL.

Every error also carries ``extensions.requestId``, the id of the request (or
websocket) it came from (server/request_ids.py), which the log lines of that
request carry too: a client reporting an error hands operators its logs.
"""

from __future__ import annotations

import logging

from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.utils.str_converters import to_camel_case

from observability.log_context import current_request_id
from resolvers.errors import PortraitsError
from storage.errors import StorageUnavailable

logger = logging.getLogger("graph.errors")

INTERNAL_MESSAGE = "Internal server error."
UNAVAILABLE_MESSAGE = "The service is temporarily unavailable; try again shortly."
REQUEST_ID_EXTENSION = "requestId"


REQUEST_ERRORS = (InvalidOperationTypeError, CannotGetOperationTypeError, MissingQueryError)
"""strawberry's exceptions for a request it cannot run as sent: the client's error, BAD_REQUEST."""


def error_kind(error: GraphQLError) -> str:
    """``expected``, ``unavailable`` or ``unexpected``: what to log and what to show."""
    original = error.original_error
    # graphql-core raises GraphQLErrors (a bad enum or scalar in variables, say) as client-facing.
    if original is None or isinstance(original, (PortraitsError, GraphQLError, *REQUEST_ERRORS)):
        return "expected"
    if isinstance(original, StorageUnavailable):
        return "unavailable"
    return "unexpected"


def format_error(error: GraphQLError) -> GraphQLError:
    kind = error_kind(error)
    if isinstance(error.original_error, InvalidOperationTypeError):
        return _with_code(error, _operation_refused(error.original_error), "BAD_REQUEST")
    if isinstance(error.original_error, CannotGetOperationTypeError):
        return _with_code(error, _operation_missing(error.original_error), "BAD_REQUEST")
    if isinstance(error.original_error, MissingQueryError):
        return _with_code(error, "The request has no GraphQL query.", "BAD_REQUEST")
    if kind == "expected":
        if error.extensions and "code" in error.extensions:
            return _with_api_field_name(error)
        return _with_code(error, error.message, _graphql_code(error))
    if kind == "unavailable":
        return _with_code(error, UNAVAILABLE_MESSAGE, "SERVICE_UNAVAILABLE")
    return _with_code(error, INTERNAL_MESSAGE, "INTERNAL_SERVER_ERROR")


def log_and_format_errors(errors: list[GraphQLError]) -> None:
    """Log what a client cannot be blamed for, with the cause; then format every error, in place.

    In place, because strawberry hands ``Schema.process_errors`` the very list
    it returns, on every path (parse, validation, execution, subscriptions),
    while extensions miss errors raised while parsing.
    """
    for error in errors:
        kind = error_kind(error)
        if kind == "unexpected":
            logger.error("unexpected error at %s", error.path, exc_info=error.original_error)
        elif kind == "unavailable":
            logger.warning("database unavailable at %s: %s", error.path, error.original_error)
    errors[:] = [with_request_id(format_error(error)) for error in errors]


def with_request_id(error: GraphQLError) -> GraphQLError:
    """A copy of ``error`` whose extensions name the current request, if one is known.

    A copy, never ``error`` changed: validation errors are cached and shared
    by every request that sends the same document (graph/schema.py).
    """
    request_id = current_request_id()
    if request_id is None:
        return error
    return GraphQLError(
        error.message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=error.original_error,
        extensions={**(error.extensions or {}), REQUEST_ID_EXTENSION: request_id},
    )


def as_validation_error(error: GraphQLError) -> GraphQLError:
    """``error``, found by validation, with GRAPHQL_VALIDATION_FAILED (a code it already has is kept)."""
    if error.extensions and "code" in error.extensions:
        return error
    return _with_code(error, error.message, "GRAPHQL_VALIDATION_FAILED")


def _with_api_field_name(error: GraphQLError) -> GraphQLError:
    """Resolvers name fields as stored (``appearance_tags``); clients know them as in the schema."""
    field = (error.extensions or {}).get("field")
    if not isinstance(field, str) or "_" not in field:
        return error
    error.extensions = {**(error.extensions or {}), "field": to_camel_case(field)}
    return error


def _operation_refused(error: InvalidOperationTypeError) -> str:
    """strawberry's graphql-ws handler runs subscriptions only (HTTP refuses subscriptions before this)."""
    kind = error.operation_type.value
    return (f"a {kind} cannot run over graphql-ws, which carries subscriptions only: "
            f"send it over HTTP or graphql-transport-ws")


def _operation_missing(error: CannotGetOperationTypeError) -> str:
    if error.operation_name is None:
        return "The document holds no operation to run."
    return "The document holds no operation of the name in operationName."


def _graphql_code(error: GraphQLError) -> str:
    if isinstance(error, GraphQLSyntaxError):
        return "GRAPHQL_PARSE_FAILED"
    if error.message.startswith(("Variable '$", "Variable values ")):  # graphql-core's coercion of variables
        return "BAD_USER_INPUT"
    return "GRAPHQL_VALIDATION_FAILED"


def _with_code(error: GraphQLError, message: str, code: str) -> GraphQLError:
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions={**(error.extensions or {}), "code": code},
    )
