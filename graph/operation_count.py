"""Counting GraphQL operations and the error codes they answer with (graph/operation_metrics.py).

Called from the schema's stages (graph/schema.py: ``LimitedCachedDocuments``,
run by graph/stages.py), not from an extension of its own: strawberry sets up
every extension for each of an operation's four stages, and a second one cost
a query about 100 more Python calls (bench/metrics_overhead.py). Counting runs
once per operation, never per field; for a subscription the execution stage
is only its start, so an idle subscriber keeps nothing of it.

Only an operation that parsed and validated is named (its operationName, or
``anonymous``); a refused one is counted as ``other``/``refused``, so a
client cannot mint label values from documents the schema turned down. The
server caps the distinct names besides (server/metrics.py).
"""

from __future__ import annotations

from graphql import GraphQLError
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from graph.context import Context
from graph.operation_metrics import ANONYMOUS, ERROR, OK, REFUSED, SUBSCRIBED, UNNAMED_REFUSAL

SUBSCRIPTION = OperationType.SUBSCRIPTION.value


def record_errors(errors: list[GraphQLError], context: object) -> None:
    """Count formatted errors by code (``Schema.process_errors`` sees every error list once)."""
    if isinstance(context, Context) and errors:
        context.metrics.errors(str((error.extensions or {}).get("code", "")) for error in errors)


def record_refusal(execution: ExecutionContext) -> None:
    """The document did not parse, or did not validate (limits included): counted without its name."""
    _record(execution, UNNAMED_REFUSAL, _type(execution), REFUSED)


def record_execution(execution: ExecutionContext, *, failed: bool) -> None:
    """A validated operation's execution ended (``failed``: it raised): counted with its outcome."""
    operation_type = _type(execution)
    if failed:
        outcome = ERROR
    elif operation_type == SUBSCRIPTION:
        outcome = SUBSCRIBED
    elif execution.result is not None and not execution.result.errors:
        outcome = OK
    else:
        outcome = ERROR
    _record(execution, execution.operation_name or ANONYMOUS, operation_type, outcome)


def _type(execution: ExecutionContext) -> str:
    if execution.graphql_document is None:
        return "unknown"
    try:
        return execution.operation_type.value
    except RuntimeError:  # the document holds no operation of that name (strawberry refuses it anyway)
        return "unknown"


def _record(execution: ExecutionContext, name: str, operation_type: str, outcome: str) -> None:
    context = execution.context
    if isinstance(context, Context):
        context.metrics.operation(name, operation_type, outcome)
