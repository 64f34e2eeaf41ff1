"""The schema object: the per-domain queries and mutations merged, with the limits on.

Limits (documented in the README): a document may hold at most
``MAX_DOCUMENT_CHARS`` characters, ``MAX_TOKENS`` lexical tokens and ``MAX_FIELDS`` fields, nest at most
``MAX_DEPTH`` levels (introspection fields excepted), and with its fragments
expanded hold at most ``MAX_ALIASES`` aliases, ``MAX_SELECTIONS`` fields and ``MAX_REPEATS`` fields of one
response name in a selection set (graph/document_cost.py), and answer with at most ``MAX_RESULTS`` values of data
and ``MAX_INTROSPECTION`` of introspection (graph/result_size.py). GraphiQL's introspection query fits.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Iterable
from functools import cache
from typing import Any

import strawberry
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
    validate,
)
from graphql import build_schema as build_graphql_schema
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.schema.name_converter import NameConverter
from strawberry.schema.schema import (
    DEFAULT_ALLOWED_OPERATION_TYPES,
    StrawberryGraphQLCoreExecutionContext,
    StreamResult,
)
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType

from graph.catalog import CatalogQuery
from graph.characters import CharacterMutation, CharacterQuery
from graph.count_cost import MAX_SEARCHES, counts_over_limit
from graph.document_cache import DocumentCache
from graph.document_cost import Limits, count, document_too_long, measure, over_limits, refusal
from graph.errors import as_validation_error, log_and_format_errors, with_request_id
from graph.jobs import JobMutation, JobQuery
from graph.library import LibraryMutation, LibraryQuery
from graph.operation_count import record_errors, record_execution, record_refusal
from graph.plans import PlanCache
from graph.plans.strawberry_fields import basic_fields
from graph.result_size import ListBounds, estimate_results, introspection_averages, introspection_bounds
from graph.stages import StageRunner, Stages
from graph.subscriptions import Subscription
from graph.variable_bounds import check_variables
from graph.viewer import ViewerQuery
from resolvers.characters import TAGS_MAX_COUNT
from resolvers.jobs import MAX_JOB_ATTEMPTS
from resolvers.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from storage.image_models import MAX_MODEL_SIZES

MAX_DEPTH = 10
MAX_TOKENS = 2000
# Longer documents are refused before validation, whose check that same-named fields merge compares their
# arguments' printed values pair by pair: 31 aliases of one field with a 120 KB string took 3.3 s. The largest
# legal literals (a 4000-character description, 16 KiB of sceneBehaviorRules) fit many times over.
MAX_DOCUMENT_CHARS = 100_000
MAX_ALIASES = 30
MAX_FIELDS = 200
MAX_SELECTIONS = 1000
# Fields sharing one response name in a selection set, fragments merged in (graph/document_cost.py): validation
# compares them pair by pair, printing their arguments each time. 199 copies of one mutation with a 470-character
# argument (98.8 KB) cost 270 ms; 20 copies of a 5,000-character one cost ~30 ms. Clients repeat id and __typename
# across a few fragments; GraphiQL's introspection query repeats nothing.
MAX_REPEATS = 20
# Values a response may hold, each list's items counted (graph/result_size.py): about 4 us of CPU each, so the
# largest accepted answer costs tens of ms. A page of 100 characters with every field fits (8,801); two fit
# without sceneBehaviorRules (9,602).
MAX_RESULTS = 10_000
# totalCount fields a document may ask for (graph/count_cost.py): each is a count over a whole list, linear in the
# viewer's rows (240 ms at 200,000 characters); a page showing each list's size, jobs by status too, asks for eight.
MAX_TOTAL_COUNTS = 10
# What a JSON leaf (sceneBehaviorRules: up to 16 KiB, thousands of values) counts: two pages of 100 characters
# with the largest rules cost 78 ms (decoded from PostgreSQL, encoded again); one page fits, two do not.
JSON_WEIGHT = 40
# Values __schema and __type could answer with, counted the same way but apart: GraphiQL's introspection query is
# 9,383 (16 ms: its ofType chains count in full, most are null), 9,599 with every option of graphql-core's
# get_introspection_query (8,862 and 9,064 before the schema gained its search, order, count and provider fields and
# enums: the limit rose from 11,000 to keep 15% of room; 10,248 with ProviderProgress's percent and message: it rose
# from 12,000 to 12,500 for the same room); a walk of every type's fields costs about 4 us a value; one
# of 29 aliases, each field's type's fields below it (240 ms before), is over a million.
MAX_INTROSPECTION = 12_500
# Bounds of the lists that are not pages: attempts (JOB_MAX_ATTEMPTS is at most 20), the model catalogue.
MAX_IMAGE_MODELS = 50
# The parsed documents and validation results kept (graph/document_cache.py), by their documents' characters: about
# 120 bytes of objects a character, so at most ~24 MB (a count of 256 admitted 300 MB of 10,000-character documents).
CACHED_DOCUMENT_CHARS = 200_000
# Longer documents are parsed and validated each time, never cached: clients send the same few documents of a few
# KB, and one of 100,000 characters would push out a hundred of theirs.
MAX_CACHED_DOCUMENT_CHARS = 10_000

LIMITS = Limits(
    depth=MAX_DEPTH, aliases=MAX_ALIASES, fields=MAX_FIELDS, selections=MAX_SELECTIONS, repeats=MAX_REPEATS
)



@strawberry.type(description="What you can read: your own data (a bearer token is needed) and the public catalogue.")
class Query(ViewerQuery, CharacterQuery, JobQuery, LibraryQuery, CatalogQuery):
    """The per-domain queries in one type (as strawberry's merge_types does, with a description)."""


@strawberry.type(description="What you can change; every mutation needs a bearer token and acts on your own data.")
class Mutation(CharacterMutation, JobMutation, LibraryMutation):
    """The per-domain mutations in one type."""


SUBSCRIPTION_NEEDS_WEBSOCKET = (
    "Subscriptions run over a websocket: connect to /graphql with graphql-transport-ws (or graphql-ws)"
)


class LimitedCachedDocuments:
    """Parse under ``MAX_TOKENS``, refuse documents over the cost limits, validate; each through a shared LRU cache.

    The schema's ``Stages`` (graph/stages.py): strawberry's runner calls them
    around its parse, validation and execution, with no extension machinery.
    The cost (graph/document_cost.py) is measured before validation, in one
    pass that measures each fragment once, so no validator ever sees a
    document whose fragments expand past the limits. Repeated documents (every
    client sends the same few) skip parsing, measuring and validation.
    Strawberry validates in its own step, between ``validating`` and
    ``validated``: on a cache hit, or a document over the limits, the first
    hands it the errors (``pre_execution_errors``, which makes strawberry skip
    validation), and on a miss the second keeps what strawberry found.
    Variables too big to coerce (graph/variable_bounds.py) are refused in the
    same place, uncached. This does what strawberry's MaxTokensLimiter,
    ParserCache and ValidationCache do in three extensions; two of those hook
    ``on_operation``, which stays open as long as a subscription lives: about
    1.5 KB per idle subscriber.

    It also counts each operation for the metrics, refused or executed
    (graph/operation_count.py), once per operation, never per field.
    """

    documents = DocumentCache(CACHED_DOCUMENT_CHARS)

    def parsing(self, execution: ExecutionContext) -> None:
        execution.parse_options["max_tokens"] = MAX_TOKENS
        # On a syntax error strawberry parses it again, where the failure becomes the
        # client's error (one raised here would escape).
        # (a longer one strawberry parses itself, uncached, under the same token limit; one over
        # MAX_DOCUMENT_CHARS is then refused in validating)
        query = execution.query or ""
        if len(query) <= MAX_CACHED_DOCUMENT_CHARS:
            with contextlib.suppress(GraphQLError):
                execution.graphql_document = self.documents.parse(query, max_tokens=MAX_TOKENS)

    def parsed(self, execution: ExecutionContext) -> None:
        if execution.graphql_document is None:  # strawberry's parse raised: a syntax error, too many tokens
            record_refusal(execution)

    def validating(self, execution: ExecutionContext) -> int:
        document = execution.graphql_document
        if document is None or execution.pre_execution_errors is not None:
            return _NOTHING_TO_KEEP
        query = execution.query or ""
        too_big = document_too_long(query, MAX_DOCUMENT_CHARS) or check_variables(execution.variables, document)
        if too_big is not None:
            execution.pre_execution_errors = [too_big]  # refused before it could fill the caches: never cached
            return _NOTHING_TO_KEEP
        cached = len(query) <= MAX_CACHED_DOCUMENT_CHARS
        if cached and (known := self.documents.errors(query)) is not None:
            execution.pre_execution_errors = known
            return _NOTHING_TO_KEEP  # a hit: the cache holds these errors already
        execution.pre_execution_errors = (
            over_limits(measure(document), LIMITS)
            or results_over_limit(document, execution.schema)
            or counts_over_limit(document, MAX_TOTAL_COUNTS, MAX_SEARCHES)
            or None
        )
        step = _VALIDATED_NOW if execution.pre_execution_errors is None else 0
        return step | _KEEP if cached else step

    def validated(self, execution: ExecutionContext, step: int) -> None:
        errors = execution.pre_execution_errors
        if errors is not None and step:
            if step & _VALIDATED_NOW:
                # In place: strawberry returns this very list. Coded here, where they are known to be
                # validation errors ("Variable '$x' is never used." is one; a variable's bad value is not).
                errors[:] = [as_validation_error(error) for error in errors]
            if step & _KEEP:
                self.documents.put_errors(execution.query or "", errors)
        if errors:
            record_refusal(execution)

    def executed(self, execution: ExecutionContext, *, failed: bool) -> None:
        record_execution(execution, failed=failed)


# What ``LimitedCachedDocuments.validated`` does with what validation found (flags of ``validating``'s step).
_NOTHING_TO_KEEP = 0
_VALIDATED_NOW = 1  # strawberry validated it: its errors are validation errors
_KEEP = 2  # a cacheable document, not found in the cache: keep the errors found


def validated(query: str) -> bool:
    """True when the schema parsed ``query``, found it within the limits and validated it (its document cache
    says so: documents longer than ``MAX_CACHED_DOCUMENT_CHARS`` are never cached, so never True).

    Persisted queries keep only such documents (server/persisted_queries.py).
    """
    return LimitedCachedDocuments.documents.errors(query) == []


def document_errors(query: str, schema: strawberry.Schema) -> list[GraphQLError]:
    """What refuses ``query`` here, outside any request: a syntax error, the limits, graphql-core's validation
    rules against ``schema``'s SDL. Empty when it could run. For documents registered ahead of time
    (`portraits documents register`), checked before they are stored."""
    if (too_long := document_too_long(query, MAX_DOCUMENT_CHARS)) is not None:
        return [too_long]
    try:
        document = parse(query, max_tokens=MAX_TOKENS)
    except GraphQLError as error:
        return [error]
    refused = (
        over_limits(measure(document), LIMITS)
        or results_over_limit(document, schema)
        or counts_over_limit(document, MAX_TOTAL_COUNTS, MAX_SEARCHES)
    )
    return refused or validate(_result_types(schema)[0], document)


INTROSPECTION_FIELDS = frozenset({"__schema", "__type", "__typename"})


def introspection_only(query: str) -> bool:
    """True when every operation of ``query`` selects only ``__schema``, ``__type`` and ``__typename`` at its root
    (fragments followed): GraphiQL's schema explorer, which runs where only registered documents do."""
    if len(query) > MAX_CACHED_DOCUMENT_CHARS:
        return False
    try:
        document = LimitedCachedDocuments.documents.parse(query, max_tokens=MAX_TOKENS)
    except GraphQLError:
        return False
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    operations = [definition for definition in document.definitions if isinstance(definition, OperationDefinitionNode)]
    return bool(operations) and all(
        _introspection_selections(operation.selection_set, fragments, set()) for operation in operations
    )


def _introspection_selections(
    selection_set: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode], seen: set[str]
) -> bool:
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.name.value not in INTROSPECTION_FIELDS:
                return False
        elif isinstance(selection, InlineFragmentNode):
            if not _introspection_selections(selection.selection_set, fragments, seen):
                return False
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in seen:
                continue
            seen.add(name)
            fragment = fragments.get(name)
            if fragment is None or not _introspection_selections(fragment.selection_set, fragments, seen):
                return False
    return True


@cache
def _result_types(schema: strawberry.Schema) -> tuple[GraphQLSchema, ListBounds]:
    """The schema's types as graphql-core sees them, rebuilt from its SDL (strawberry keeps its own private)."""
    types = build_graphql_schema(schema.as_str())
    fixed = {
        **introspection_bounds(types),
        ("Character", "appearanceTags"): TAGS_MAX_COUNT,
        ("LibraryAsset", "tags"): TAGS_MAX_COUNT,
        ("Job", "attemptHistory"): MAX_JOB_ATTEMPTS,
        ("Query", "imageModels"): MAX_IMAGE_MODELS,
        ("ImageModel", "sizes"): MAX_MODEL_SIZES,
    }
    return types, ListBounds(
        default_page=DEFAULT_PAGE_SIZE, max_page=MAX_PAGE_SIZE, fixed=fixed,
        averages=introspection_averages(types), scalar_weights={"JSON": JSON_WEIGHT},
    )


def results_over_limit(document: DocumentNode, schema: strawberry.Schema) -> list[GraphQLError]:
    """The refusal of a document whose response could hold more than ``MAX_RESULTS`` values of data, or
    ``MAX_INTROSPECTION`` of introspection (graph/result_size.py)."""
    types, bounds = _result_types(schema)
    size = estimate_results(document, types, bounds)
    if size > MAX_RESULTS:
        return [refusal(
            f"The response could hold {count(size)} values, counting every item of its lists; "
            f"at most {MAX_RESULTS} are allowed: ask for smaller pages or fewer fields.",
            "results", MAX_RESULTS, size,
        )]
    size = estimate_results(document, types, bounds, introspection=True)
    if size > MAX_INTROSPECTION:
        return [refusal(
            f"The introspection answer could hold {count(size)} values, counting every item of its lists; "
            f"at most {MAX_INTROSPECTION} are allowed.",
            "introspection", MAX_INTROSPECTION, size,
        )]
    return []


class PortraitsExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context, through compiled plans, with a fresh executor for each subscription event.

    ``execute_operation`` runs the operation's plan (graph/plans/) when the
    request's context carries a ``PlanCache`` (``EXECUTION_PLANS=on``) and
    the plan supports it, else graphql-core's as before. Subscription events
    come through it too (graphql-core's execute_subscription_event calls
    ``execute_operation(False)`` on each event's executor).

    graphql-core 3.3.2 builds each event's executor as a shallow copy of the
    subscription's, sharing its memos; ``collect_subfields`` memoises on the
    identity of lists made anew per event, so a long-lived subscription grew
    ~1 KB per event it sent (tests/test_subscription_memory.py). Building the
    event's executor anew from the subscription's public arguments gives it
    memos of its own, freed with the event, as a single query has.

    Overrides graphql-core's ``build_per_event_executor`` and calls its
    constructor: graphql-core is pinned to 3.3.x and
    tests/test_library_overrides.py fails when either changes.
    """

    def execute_operation(self, serially: bool | None = None) -> Any:
        plans = getattr(self.context_value, "plans", None)
        if isinstance(plans, PlanCache):
            result = plans.execute(self, serially, basic_fields)
            if result is not None:
                return result
        return super().execute_operation(serially)

    def build_per_event_executor(self, payload: Any) -> PortraitsExecutionContext:
        return type(self)(
            self.schema,
            self.fragment_definitions,
            self.fragments,
            payload,
            self.context_value,
            self.operation,
            self.variable_values,
            self.field_resolver,
            self.type_resolver,
            self.subscribe_field_resolver,
            enable_early_execution=self.enable_early_execution,
            middleware_manager=self.middleware_manager,
            is_awaitable=self.is_awaitable,
            is_async_iterable=self.is_async_iterable,
            hide_suggestions=self.hide_suggestions,
            abort_signal=self.abort_signal,
            hooks=self.hooks,
            operation_extensions=self.operation_extensions,
        )


class PortraitsSchema(strawberry.Schema):
    """Strawberry's schema with our stages (``LimitedCachedDocuments``), request errors and error formatting."""

    # What the schema does at each stage of every operation (graph/stages.py).
    stages: Stages = LimitedCachedDocuments()

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        """Strawberry's runner with ``stages`` run first in and last out of every stage (graph/stages.py)."""
        return StageRunner(execution_context, extensions, self.stages)

    async def execute(
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

        Every request error (the document does not parse or validate, its
        variables do not coerce, it holds several operations and no
        ``operationName`` says which) comes back as strawberry's
        ``PreExecutionError``, nothing run: the HTTP view answers it 400
        without ``data`` to a client that accepts application/graphql-response+json
        (server/app.py). A request with no query, or whose operation is not in
        the document, is a request error the HTTP view answers too
        (server/graphql_request.py). (Websockets go through ``subscribe``/``stream``, never here.)
        """
        if (unnamed := several_operations_unnamed(query, operation_name)) is not None:
            return PreExecutionError(data=None, errors=[unnamed])
        allowed = set(DEFAULT_ALLOWED_OPERATION_TYPES if allowed_operation_types is None else allowed_operation_types)
        try:
            result = await super().execute(
                query, variable_values, context_value, root_value, operation_name,
                allowed - {OperationType.SUBSCRIPTION}, operation_extensions,
            )
        except InvalidOperationTypeError as error:
            if error.operation_type is not OperationType.SUBSCRIPTION or OperationType.SUBSCRIPTION not in allowed:
                raise
            # (not through process_errors: it carries the request's id here, as every error does)
            refusal = GraphQLError(SUBSCRIPTION_NEEDS_WEBSOCKET, extensions={"code": "BAD_REQUEST"})
            return PreExecutionError(data=None, errors=[with_request_id(refusal)])
        return as_request_error(result)

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
    ) -> StreamResult:
        """Websocket operations (``subscribe`` calls this too): one of several operations sent without
        ``operationName`` is refused (an error message on the socket), never the first one run."""
        if (unnamed := several_operations_unnamed(query, operation_name)) is not None:
            return _refused_stream(unnamed)
        return await super().stream(
            query, variable_values, context_value, root_value, operation_name, operation_extensions,
            allowed_operation_types,
        )

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        """Log only what the client did not cause, and give every error its code (graph/errors.py).

        Strawberry's default logs every error, a typo in a query included, as a crash. Each list comes here
        once, so the codes are counted here (graph/operation_count.py).
        """
        log_and_format_errors(errors)
        if execution_context is not None:
            record_errors(errors, execution_context.context)


def several_operations_unnamed(query: str | None, operation_name: str | None) -> GraphQLError | None:
    """The request error of a document holding several operations sent without ``operationName``.

    A named operation starts with ``query``, ``mutation`` or ``subscription``: a document holding fewer than two
    of these words holds at most one operation that clients can name (an anonymous one beside others fails
    validation), and is never parsed here.

    The GraphQL spec's GetOperation() raises then; strawberry's execution
    context instead picks the document's first operation and graphql-core
    runs it, a mutation included. The document is parsed through the shared
    cache (``LimitedCachedDocuments``), so parsing it here costs a lookup
    when strawberry parses it next; one that does not parse is left to
    strawberry, which answers its syntax error.
    """
    if operation_name is not None or not query or len(query) > MAX_DOCUMENT_CHARS:
        return None
    if query.count("query") + query.count("mutation") + query.count("subscription") < 2:
        return None
    try:
        document = LimitedCachedDocuments.documents.parse(query, max_tokens=MAX_TOKENS)
    except GraphQLError:
        return None
    operations = sum(isinstance(definition, OperationDefinitionNode) for definition in document.definitions)
    if operations < 2:
        return None
    return with_request_id(GraphQLError(
        f"The document holds {operations} operations: name the one to run in operationName.",
        extensions={"code": "BAD_REQUEST"},
    ))


def as_request_error(result: ExecutionResult) -> ExecutionResult:
    """``result`` as a ``PreExecutionError`` when graphql-core refused to start executing it.

    graphql-core answers variables that do not coerce (and an operation it
    cannot pick) with ``data`` null and errors that have no path, before any
    resolver runs; strawberry hands that back as a plain ``ExecutionResult``,
    like an execution whose non-null root field failed (whose errors have a path).
    """
    if type(result) is not ExecutionResult or result.data is not None or not result.errors:
        return result
    if any(error.path is not None for error in result.errors):
        return result
    return PreExecutionError(data=None, errors=result.errors, extensions=result.extensions)


async def _refused_stream(error: GraphQLError) -> AsyncGenerator[PreExecutionError, None]:
    """What ``stream`` yields for an operation refused before it ran: its error, once (strawberry's websocket
    handlers send a first ``PreExecutionError`` as the operation's ``error`` message)."""
    yield PreExecutionError(data=None, errors=[error])


class RememberedNames(NameConverter):
    """strawberry's own naming (auto camel case), each Python name's GraphQL name worked out once.

    strawberry asks its name converter for the GraphQL name of every argument of a field each time it calls the
    field's resolver (``convert_arguments``: ``to_camel_case`` splits and joins the name anew), about 1.5 us an
    argument: 8 of the 28 us strawberry spends around ``characters``' resolver, which has five. Names come from the
    schema's code, so the memo holds a fixed set; ``MAX_NAMES`` bounds it all the same.
    """

    MAX_NAMES = 4096

    def __init__(self) -> None:
        super().__init__(auto_camel_case=True)
        self.names: dict[str, str] = {}

    def apply_naming_config(self, name: str) -> str:
        converted = self.names.get(name)
        if converted is None:
            converted = super().apply_naming_config(name)
            if len(self.names) < self.MAX_NAMES:
                self.names[name] = converted
        return converted


def build_schema(extensions: Iterable[type[SchemaExtension]] = (), **kwargs: Any) -> PortraitsSchema:
    """The schema, with ``extensions`` run inside our own stages (``LimitedCachedDocuments``), naming with
    ``RememberedNames`` unless ``config`` says otherwise."""
    kwargs.setdefault("config", StrawberryConfig(name_converter=RememberedNames()))
    return PortraitsSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        execution_context_class=PortraitsExecutionContext,
        extensions=list(extensions),
        **kwargs,
    )


schema = build_schema()
