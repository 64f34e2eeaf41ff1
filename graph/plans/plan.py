"""One operation's plan: its closures for each set of @skip/@include values, and how it runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphql import (
    ExecutionResult,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLIncludeDirective,
    GraphQLSchema,
    GraphQLSkipDirective,
    OperationDefinitionNode,
    OperationType,
    get_argument_values,
)
from graphql.execution import Executor

from graph.plans.collect import INCLUDE, Conditions, Decisions, Unsupported
from graph.plans.compile import BasicFields, Compiler, ObjectFn
from graph.plans.generate import Generator
from graph.plans.runtime import COROUTINE, KnownTypes, Run

# Sets of @skip/@include values compiled for one operation; a request bringing yet another set runs on graphql-core.
MAX_VARIANTS = 32
# Fields one plan may hold compiled, all its variants together (each field's closures and code cost ~2 KB): an
# operation larger than this runs on graphql-core, and a set of @skip/@include values that would take a plan past it
# runs there too. The limits on documents allow ~1,000 fields to one variant.
MAX_PLAN_FIELDS = 4096


class Plan:
    """Built once per operation; raises ``Unsupported`` (graphql-core runs the operation) when built, for what
    plans do not run or an operation of more than ``max_fields`` fields."""

    def __init__(
        self,
        schema: GraphQLSchema,
        operation: OperationDefinitionNode,
        fragments: Mapping[str, FragmentDefinitionNode],
        basic_fields: BasicFields,
        generator: Generator | None = None,
        generate_after: int = 0,
        max_fields: int = MAX_PLAN_FIELDS,
    ) -> None:
        root_type = schema.get_root_type(operation.operation)
        if root_type is None:
            raise Unsupported(f"no {operation.operation.value} type")
        if operation.directives:
            raise Unsupported("directives on the operation")
        conditions = Conditions()
        conditions.find(operation.selection_set, fragments)
        self.schema = schema
        self.operation = operation
        self.fragments = fragments
        self.basic_fields = basic_fields
        self.root_type = root_type
        self.is_mutation = operation.operation == OperationType.MUTATION
        self.conditions = conditions.directives
        # Objects' selection sets as generated code (generate.py; its budget is for every variant), or closures:
        # closures for the first ``generate_after`` executions, so a document sent once never pays for its code.
        self.generator = generator
        self.closure_runs_left = generate_after if generator is not None else 0
        # Every field any request could select, compiled once here: whatever is unsupported is found now. (Without
        # variable conditions that is the one variant; with them it is only this check.)
        checking = Compiler(schema, fragments, basic_fields, None, self._generator(bool(self.conditions)))
        everything = checking.root(operation, root_type)
        # No variant compiles more fields than this one, which lets every conditional field in.
        self.variant_fields = checking.fields
        if self.variant_fields > max_fields:
            raise Unsupported(f"{self.variant_fields} fields, more than a plan holds")
        self.max_fields = max_fields
        # The fields compiled in the variants held (the plan cache's measure of this plan).
        self.fields = 0
        self.variants: dict[tuple[bool, ...], tuple[ObjectFn, ObjectFn]] = {}
        if not self.conditions:
            self.variants[()] = everything
            self.fields = checking.fields

    def _generator(self, only_checking: bool = False) -> Generator | None:
        return None if only_checking or self.closure_runs_left else self.generator

    def execute(self, executor: Executor[Any], serially: bool | None, known: KnownTypes) -> Any:
        """The ExecutionResult (or a coroutine of it) execute_operation would return; None when this request's
        @skip/@include values could not be read (graphql-core reports why) or are one set too many (past
        MAX_VARIANTS, or past the plan's compiled fields)."""
        variant = self._variant(executor)
        if variant is None:
            return None
        if self.closure_runs_left:
            self.closure_runs_left -= 1
            if not self.closure_runs_left:  # from the next execution on, each variant is compiled again, generated
                self.variants = {}
                self.fields = 0
        parallel, serial = variant
        run = Run(executor, known)
        execute_fields = serial if (self.is_mutation if serially is None else serially) else parallel
        try:
            data = execute_fields(executor.root_value, None, run)
        except GraphQLError as error:
            run.errors.add(error, None)
            return ExecutionResult(None, run.errors.errors or None)
        if type(data) is COROUTINE:
            return _awaited_result(data, run)
        return ExecutionResult(data, run.errors.errors or None)

    def _variant(self, executor: Executor[Any]) -> tuple[ObjectFn, ObjectFn] | None:
        if not self.conditions:
            variant = self.variants.get(())
            return self._compiled((), None) if variant is None else variant
        try:
            values = tuple(
                bool(get_argument_values(
                    GraphQLIncludeDirective if directive.name.value == INCLUDE else GraphQLSkipDirective,
                    directive,
                    executor.variable_values,
                    None,
                    executor.hide_suggestions,
                )["if"])
                for directive in self.conditions
            )
        except Exception:  # noqa: BLE001 - graphql-core runs the request and reports the error where it belongs
            return None
        variant = self.variants.get(values)
        if variant is None:
            if len(self.variants) >= MAX_VARIANTS or self.fields + self.variant_fields > self.max_fields:
                return None
            decisions = {id(directive): value for directive, value in zip(self.conditions, values, strict=True)}
            variant = self._compiled(values, decisions)
        return variant

    def _compiled(self, values: tuple[bool, ...], decisions: Decisions) -> tuple[ObjectFn, ObjectFn]:
        """The variant of these @skip/@include ``values`` compiled (generated code once closure runs are over),
        held, and counted in the plan's fields."""
        compiler = Compiler(self.schema, self.fragments, self.basic_fields, decisions, self._generator())
        variant = self.variants[values] = compiler.root(self.operation, self.root_type)
        self.fields += compiler.fields
        return variant


async def _awaited_result(data: Any, run: Run) -> ExecutionResult:
    try:
        completed = await data
    except GraphQLError as error:
        run.errors.add(error, None)
        return ExecutionResult(None, run.errors.errors or None)
    return ExecutionResult(completed, run.errors.errors or None)
