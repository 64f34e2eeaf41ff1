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
from graph.plans.plan import Plan
from graph.plans.runtime import KnownTypes

DEFAULT_MAX_PLANS = 256
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


@dataclass
class _Entry:
    # Held so the ids in the key are never reused while the entry lives.
    schema: GraphQLSchema
    operation: OperationDefinitionNode
    plan: Plan | None


class PlanCache:
    """Plans by operation node (documents are cached, so a client's repeated document is the same node), LRU.

    An operation the plans do not support is remembered as such (``None``), so it is tried once.
    """

    def __init__(
        self,
        max_plans: int = DEFAULT_MAX_PLANS,
        *,
        generate: bool = True,
        generate_after: int = GENERATE_AFTER,
        max_source: int = MAX_SOURCE,
        max_total_source: int = MAX_TOTAL_SOURCE,
        keep_sources: bool = False,
    ) -> None:
        self.max_plans = max_plans
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
        plan = self._plan(executor, basic_fields)
        result = None
        if plan is not None:
            known = self._known_types.get(executor.is_awaitable)
            if known is None:
                known = self._known_types.setdefault(executor.is_awaitable, KnownTypes())
            result = plan.execute(executor, serially, known)
        if result is None:
            self.stats.fallback += 1
        else:
            self.stats.planned += 1
        return result

    def _plan(self, executor: Executor[Any], basic_fields: Callable[[GraphQLSchema], BasicFields]) -> Plan | None:
        schema, operation = executor.schema, executor.operation
        key = (id(schema), id(operation))
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry.plan
        while self._entries and len(self._entries) >= self.max_plans:  # first: the new plan may use what it frees
            _, evicted = self._entries.popitem(last=False)
            if evicted.plan is not None and evicted.plan.generator is not None:
                evicted.plan.generator.release()
        generator = Generator(self.max_source, self.stats, self.keep_sources, self._pool) if self.generate else None
        try:
            plan: Plan | None = Plan(
                schema, operation, executor.fragment_definitions, basic_fields(schema), generator, self.generate_after
            )
            self.stats.built += 1
        except Unsupported:
            plan = None
            if generator is not None:
                generator.release()
            self.stats.unsupported += 1
        self._entries[key] = _Entry(schema, operation, plan)
        return plan
