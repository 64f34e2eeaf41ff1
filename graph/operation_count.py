"""Counting GraphQL operations and the error codes they answer with (graph/operation_metrics.py).

The extension's hooks run once per operation (parse, validate, execute),
never per field; for a subscription ``on_execute`` wraps only its start, so
an idle subscriber keeps nothing of it.

Only an operation that parsed and validated is named (its operationName, or
``anonymous``); a refused one is counted as ``other``/``refused``, so a
client cannot mint label values from documents the schema turned down. The
server caps the distinct names besides (server/metrics.py).
"""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from graph.context import Context
from graph.operation_metrics import ANONYMOUS, ERROR, OK, REFUSED, SUBSCRIBED, UNNAMED_REFUSAL


def record_errors(errors: list[GraphQLError], context: object) -> None:
    """Count formatted errors by code (``Schema.process_errors`` sees every error list once)."""
    if isinstance(context, Context) and errors:
        context.metrics.errors(str((error.extensions or {}).get("code", "")) for error in errors)


class CountOperations(SchemaExtension):
    """Counts each operation once: refused while parsing or validating, or after its execution."""

    def on_parse(self) -> Iterator[None]:
        try:
            yield
        finally:
            if self.execution_context.graphql_document is None:
                self._record(UNNAMED_REFUSAL, "unknown", REFUSED)

    def on_validate(self) -> Iterator[None]:
        yield
        if self.execution_context.pre_execution_errors:
            self._record(UNNAMED_REFUSAL, self._type(), REFUSED)

    def on_execute(self) -> Iterator[None]:
        outcome = ERROR
        try:
            yield
            context = self.execution_context
            if context.operation_type is OperationType.SUBSCRIPTION:
                outcome = SUBSCRIBED
            elif context.result is not None and not context.result.errors:
                outcome = OK
        finally:
            self._record(self.execution_context.operation_name or ANONYMOUS, self._type(), outcome)

    def _type(self) -> str:
        try:
            return self.execution_context.operation_type.value
        except RuntimeError:  # the document holds no operation of that name (strawberry refuses it anyway)
            return "unknown"

    def _record(self, name: str, operation_type: str, outcome: str) -> None:
        context = self.execution_context.context
        if isinstance(context, Context):
            context.metrics.operation(name, operation_type, outcome)
