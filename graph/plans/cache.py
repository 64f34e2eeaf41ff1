"""The plans of the operations this app has run, bounded by count, and the figures of their use."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLSchema, OperationDefinitionNode
from graphql.execution import Executor

from graph.plans.collect import Unsupported
from graph.plans.compile import BasicFields
from graph.plans.generate import MAX_SOURCE, MAX_TOTAL_SOURCE, Generator, SourcePool
from graph.plans.plan import MAX_PLAN_FIELDS, Plan
from graph.plans.runtime import KnownTypes

DEFAULT_MAX_PLANS = 256
# Compiled fields the plans held may have, all together: each costs ~2 KB of closures and code, so ~35 MB at most.
# (256 plans of a 1.3 KB document of ~700 fields held 400 MB without it.) Clients' documents of a few dozen fields fit
# by the hundred.
DEFAULT_MAX_FIELDS = 16_384
# Characters of the documents whose operations the plans held name: a plan keeps its operation, which keeps its
# document's text and every token of it, ~60-120 bytes a character (256 plans of 2,000-token documents held 217 MB).
# As many as graph/schema.py's document cache holds (CACHED_DOCUMENT_CHARS); a plan outlives its document there only
# for a subscription's events, or a document too long to be cached.
DEFAULT_MAX_CHARS = 200_000
# Executions of a plan on closures before its objects are generated code: a document sent once is not compiled.
GENERATE_AFTER = 1


def no_basic_fields(_schema: GraphQLSchema) -> BasicFields:
    """Every field through its resolver (graphql-core's own behaviour): the lookup when nothing says more."""
    return lambda _type_name, _field_name: None


@dataclass
class PlanStats:
    """What the cache did: plans built, operations left to graphql-core, and executions by each way."""

    built: int = 0
    unsupported: int = 0
    planned: int = 0
    fallback: int = 0
    # Objects' selection sets compiled into generated code, and left to closures by a plan's budget of source.
    generated: int = 0
    over_budget: int = 0
    # Characters of source written, kept or dropped (an object that did not fit).
    written: int = 0


@dataclass
class _Entry:
    # Held so the ids in the key are never reused while the entry lives.
    schema: GraphQLSchema
    operation: OperationDefinitionNode
    plan: Plan | None
    # What it counts against the cache's budgets: its document's characters, its plan's compiled fields.
    chars: int
    fields: int = 0


def document_chars(operation: OperationDefinitionNode) -> int:
    """The characters of the document ``operation`` was parsed from (what holding the operation keeps alive)."""
    location = operation.loc
    return 0 if location is None else len(location.source.body)


class PlanCache:
    """Plans by operation node (documents are cached, so a client's repeated document is the same node), LRU.

    An operation the plans do not support is remembered as such (``None``), so it is tried once. Bounded by the
    plans' count, by their compiled fields (``max_fields``, each plan's by ``max_plan_fields``) and by the
    characters of the documents they keep (``max_chars``): the least recently used go first.
    """

    def __init__(
        self,
        max_plans: int = DEFAULT_MAX_PLANS,
        *,
        max_fields: int = DEFAULT_MAX_FIELDS,
        max_plan_fields: int = MAX_PLAN_FIELDS,
        max_chars: int = DEFAULT_MAX_CHARS,
        generate: bool = True,
        generate_after: int = GENERATE_AFTER,
        max_source: int = MAX_SOURCE,
        max_total_source: int = MAX_TOTAL_SOURCE,
        keep_sources: bool = False,
    ) -> None:
        self.max_plans = max_plans
        self.max_fields = max_fields
        self.max_plan_fields = min(max_plan_fields, max_fields)
        self.max_chars = max_chars
        # The compiled fields and the documents' characters of the entries held.
        self.fields = 0
        self.chars = 0
        # Objects' selection sets as generated code (graph/plans/generate.py) once a plan has run
        # ``generate_after`` times on closures, at most ``max_source`` characters of it per plan and
        # ``max_total_source`` for the plans held; False: closures only. ``keep_sources``: each plan keeps its source
        # (``sources``).
        self.generate = generate
        self.generate_after = generate_after
        self.max_source = max_source
        self.keep_sources = keep_sources
        self._pool = SourcePool(max_total_source)
        self.stats = PlanStats()
        self._entries: OrderedDict[tuple[int, int], _Entry] = OrderedDict()
        self._known_types: dict[Callable[[Any], bool], KnownTypes] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def sources(self) -> list[str]:
        """The generated source of the cached plans, oldest first, when the cache keeps it (``keep_sources``)."""
        return [
            source
            for entry in self._entries.values()
            if entry.plan is not None and entry.plan.generator is not None
            for source in entry.plan.generator.sources
        ]

    def execute(
        self,
        executor: Executor[Any],
        serially: bool | None,
        basic_fields: Callable[[GraphQLSchema], BasicFields] = no_basic_fields,
    ) -> Any:
        """The result of ``executor.execute_operation(serially)`` through the operation's plan, or None when
        graphql-core must run it: the executor is not plain (middleware, an abort signal, hooks, error
        propagation disabled) or the operation is unsupported."""
        middleware = executor.middleware_manager
        if (
            (middleware is not None and middleware.middlewares)
            or executor.abort_signal is not None
            or executor.hooks is not None
            or not executor.error_propagation
        ):
            self.stats.fallback += 1
            return None
        entry = self._entry(executor, basic_fields)
        plan = entry.plan
        result = None
        if plan is not None:
            known = self._known_types.get(executor.is_awaitable)
            if known is None:
                known = self._known_types.setdefault(executor.is_awaitable, KnownTypes())
            result = plan.execute(executor, serially, known)
            if plan.fields != entry.fields:  # a variant compiled, or the closures dropped for generated code
                self.fields += plan.fields - entry.fields
                entry.fields = plan.fields
                self._evict(lambda: self.fields > self.max_fields)
        if result is None:
            self.stats.fallback += 1
        else:
            self.stats.planned += 1
        return result

    def _entry(self, executor: Executor[Any], basic_fields: Callable[[GraphQLSchema], BasicFields]) -> _Entry:
        schema, operation = executor.schema, executor.operation
        key = (id(schema), id(operation))
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry
        chars = document_chars(operation)
        # First: the new plan may use what they free.
        self._evict(lambda: len(self._entries) >= self.max_plans or self.chars + chars > self.max_chars, keep=0)
        generator = Generator(self.max_source, self.stats, self.keep_sources, self._pool) if self.generate else None
        try:
            plan: Plan | None = Plan(
                schema, operation, executor.fragment_definitions, basic_fields(schema), generator, self.generate_after,
                self.max_plan_fields,
            )
            self.stats.built += 1
        except Unsupported:
            plan = None
            if generator is not None:
                generator.release()
            self.stats.unsupported += 1
        entry = self._entries[key] = _Entry(schema, operation, plan, chars, 0 if plan is None else plan.fields)
        self.chars += chars
        self.fields += entry.fields
        self._evict(lambda: self.fields > self.max_fields)
        return entry

    def _evict(self, over: Callable[[], bool], keep: int = 1) -> None:
        """Drop the least recently used entries while ``over()``, keeping the ``keep`` most recent (the one in use)."""
        while len(self._entries) > keep and over():
            _, evicted = self._entries.popitem(last=False)
            self.chars -= evicted.chars
            self.fields -= evicted.fields
            if evicted.plan is not None and evicted.plan.generator is not None:
                evicted.plan.generator.release()
