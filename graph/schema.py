"""The schema object: the per-domain queries and mutations merged, with the limits on.

Limits (documented in the README): a document may nest at most
``MAX_DEPTH`` levels (introspection fields excepted), hold at most
``MAX_TOKENS`` lexical tokens and ``MAX_ALIASES`` aliases. GraphiQL's
introspection query fits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from typing import Any

import strawberry
from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, parse
from graphql import OperationType as GraphQLOperationType
from graphql.pyutils.ref_map import RefMap
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter, SchemaExtension
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.schema.schema import (
    DEFAULT_ALLOWED_OPERATION_TYPES,
    StrawberryGraphQLCoreExecutionContext,
    validate_document,
)
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from graph.catalog import CatalogQuery
from graph.characters import CharacterMutation, CharacterQuery
from graph.errors import log_and_format_errors
from graph.jobs import JobMutation, JobQuery
from graph.library import LibraryMutation, LibraryQuery
from graph.subscriptions import Subscription
from graph.viewer import ViewerQuery

MAX_DEPTH = 10
MAX_TOKENS = 2000
MAX_ALIASES = 30
CACHE_SIZE = 256

# The limiters' rule classes, made once: the validation cache is keyed by the
# rule tuple, so per-request rule classes would never hit it.
LIMIT_RULES: tuple[type[ASTValidationRule], ...] = (
    *QueryDepthLimiter(max_depth=MAX_DEPTH).validation_rules,
    *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
)

Query = merge_types("Query", (ViewerQuery, CharacterQuery, JobQuery, LibraryQuery, CatalogQuery))
Mutation = merge_types("Mutation", (CharacterMutation, JobMutation, LibraryMutation))


SUBSCRIPTION_NEEDS_WEBSOCKET = (
    "Subscriptions run over a websocket: connect to /graphql with graphql-transport-ws (or graphql-ws)"
)


@lru_cache(maxsize=CACHE_SIZE)
def _parse(query: str, max_tokens: int) -> DocumentNode:
    return parse(query, max_tokens=max_tokens)


@lru_cache(maxsize=CACHE_SIZE)
def _validate(
    schema: GraphQLSchema, document: DocumentNode, rules: tuple[type[ASTValidationRule], ...]
) -> list[GraphQLError]:
    return validate_document(schema, document, rules)


class LimitedCachedDocuments(SchemaExtension):
    """Parse under ``MAX_TOKENS`` and validate with the depth and alias rules, each through a shared LRU cache.

    Repeated documents (every client sends the same few) skip parsing and
    validation. This does in two hooks what strawberry's MaxTokensLimiter,
    AddValidationRules, ParserCache and ValidationCache do in four
    extensions; two of those hook ``on_operation``, which stays open as long
    as a subscription lives: about 1.5 KB per idle subscriber.
    """

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        context.parse_options["max_tokens"] = MAX_TOKENS
        try:
            context.graphql_document = _parse(context.query, MAX_TOKENS)
        except Exception:  # noqa: BLE001
            pass  # strawberry parses it again, where a failure becomes the client's error (a hook's would escape)
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        context.validation_rules = (*context.validation_rules, *LIMIT_RULES)
        assert context.graphql_document is not None
        context.pre_execution_errors = _validate(context.schema._schema, context.graphql_document, context.validation_rules)  # noqa: SLF001
        yield


class PortraitsExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context, with the execution state of a subscription made per event.

    graphql-core 3.3.2 keeps a subscription's executor for the subscription's
    whole life and builds each event's executor as a shallow copy of it that
    shares its memos and future sets. Two costs follow, both per idle
    subscriber: ``_relevant_sub_fields``, memoised by the identity of lists
    made anew per event, grew ~1 KB per event (and fed the garbage
    collector); and the empty memos and sets themselves, ~2 KB, though only
    events use them. So a subscription's executor drops them, and each event's
    executor gets its own, as a single query has.
    """

    # What each event's executor gets fresh, and a subscription's executor does without.
    _PER_EVENT_STATE: dict[str, Callable[[], object]] = {
        "_relevant_sub_fields": dict, "_stream_usages": RefMap, "_initial_execution_plans": RefMap,
        "_deferred_execution_plans": RefMap, "pending_incremental_futures": set, "background_futures": set,
        "groups": list, "tasks": list, "streams": list,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.operation.operation is GraphQLOperationType.SUBSCRIPTION:
            for name in self._PER_EVENT_STATE:
                setattr(self, name, None)  # an event's executor gets its own (build_per_event_executor)

    def build_per_event_executor(self, payload: Any) -> PortraitsExecutionContext:
        executor = super().build_per_event_executor(payload)
        for name, fresh in self._PER_EVENT_STATE.items():
            setattr(executor, name, fresh())
        return executor  # type: ignore[return-value]


class PortraitsSchema(strawberry.Schema):
    async def execute(  # noqa: PLR0917 - strawberry's signature
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """Single results only: a subscription over plain HTTP gets a clear error, not a half-run resolver.

        (Websockets go through ``subscribe``/``stream``, never here.)
        """
        allowed = set(DEFAULT_ALLOWED_OPERATION_TYPES if allowed_operation_types is None else allowed_operation_types)
        try:
            return await super().execute(
                query, variable_values, context_value, root_value, operation_name,
                allowed - {OperationType.SUBSCRIPTION}, operation_extensions,
            )
        except InvalidOperationTypeError as error:
            if error.operation_type is not OperationType.SUBSCRIPTION or OperationType.SUBSCRIPTION not in allowed:
                raise
            return ExecutionResult(
                data=None, errors=[GraphQLError(SUBSCRIPTION_NEEDS_WEBSOCKET, extensions={"code": "BAD_REQUEST"})]
            )

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        """Log only what the client did not cause, and give every error its code (graph/errors.py).

        Strawberry's default logs every error, a typo in a query included, as a crash.
        """
        log_and_format_errors(errors)


def build_schema(**kwargs: Any) -> PortraitsSchema:
    return PortraitsSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        execution_context_class=PortraitsExecutionContext,
        extensions=[LimitedCachedDocuments],
        **kwargs,
    )


schema = build_schema()
