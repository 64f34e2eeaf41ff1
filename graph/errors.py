"""Every GraphQL error leaves with a stable ``extensions.code``; unexpected ones leave masked.

- ``PortraitsError`` (resolvers/errors.py): message and code as raised.
- graphql-core's own errors (syntax, validation, variable coercion): their
  message, which names only the query, and a code for each kind.
- the database being unreachable: SERVICE_UNAVAILABLE, a retryable answer.
- anything else: "Internal server error." with INTERNAL_SERVER_ERROR; the log
  (``Schema.process_errors``) keeps the exception and its traceback, the
  client never sees a stack trace or SQL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.extensions import SchemaExtension

from resolvers.errors import PortraitsError
from storage.errors import StorageUnavailable

logger = logging.getLogger("graph.errors")

INTERNAL_MESSAGE = "Internal server error."
UNAVAILABLE_MESSAGE = "The service is temporarily unavailable; try again shortly."


def error_kind(error: GraphQLError) -> str:
    """``expected``, ``unavailable`` or ``unexpected``: what to log and what to show."""
    original = error.original_error
    if original is None or isinstance(original, PortraitsError):
        return "expected"
    if isinstance(original, StorageUnavailable):
        return "unavailable"
    return "unexpected"


def format_error(error: GraphQLError) -> GraphQLError:
    kind = error_kind(error)
    if kind == "expected":
        if error.extensions and "code" in error.extensions:
            return error
        return _with_code(error, error.message, _graphql_code(error))
    if kind == "unavailable":
        return _with_code(error, UNAVAILABLE_MESSAGE, "SERVICE_UNAVAILABLE")
    return _with_code(error, INTERNAL_MESSAGE, "INTERNAL_SERVER_ERROR")


def log_errors(errors: list[GraphQLError]) -> None:
    """Log what a client cannot be blamed for, with the cause."""
    for error in errors:
        kind = error_kind(error)
        if kind == "unexpected":
            original = error.original_error
            logger.error("unexpected error at %s", error.path, exc_info=(type(original), original, original.__traceback__))  # type: ignore[arg-type]
        elif kind == "unavailable":
            logger.warning("database unavailable at %s: %s", error.path, error.original_error)


def _graphql_code(error: GraphQLError) -> str:
    if isinstance(error, GraphQLSyntaxError):
        return "GRAPHQL_PARSE_FAILED"
    if error.message.startswith("Variable '$"):
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


class ErrorCodes(SchemaExtension):
    """Rewrites the result's errors through ``format_error`` once the operation is done."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = [format_error(error) for error in errors]  # type: ignore[union-attr]
