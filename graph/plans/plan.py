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

from graph.plans.collect import INCLUDE, Conditions, Unsupported
from graph.plans.compile import BasicFields, Compiler, ObjectFn
from graph.plans.generate import Generator
from graph.plans.runtime import COROUTINE, KnownTypes, Run

# Sets of @skip/@include values compiled for one operation; a request bringing yet another set runs on graphql-core.
MAX_VARIANTS = 32


class Plan:
    """Built once per operation; raises ``Unsupported`` (graphql-core runs the operation) when built."""

    def __init__(
        self,
        schema: GraphQLSchema,
        operation: OperationDefinitionNode,
        fragments: Mapping[str, FragmentDefinitionNode],
        basic_fields: BasicFields,
        generator: Generator | None = None,
        generate_after: int = 0,
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
        everything = Compiler(schema, fragments, basic_fields, None, self._generator(bool(self.conditions))).root(
            operation, root_type
        )
        self.variants: dict[tuple[bool, ...], tuple[ObjectFn, ObjectFn]] = {}
        if not self.conditions:
            self.variants[()] = everything

    def _generator(self, only_checking: bool = False) -> Generator | None:
        return None if only_checking or self.closure_runs_left else self.generator

    def execute(self, executor: Executor[Any], serially: bool | None, known: KnownTypes) -> Any:
        """The ExecutionResult (or a coroutine of it) execute_operation would return; None when this request's
        @skip/@include values could not be read (graphql-core reports why) or are one set too many."""
        variant = self._variant(executor)
        if variant is None:
            return None
        if self.closure_runs_left:
            self.closure_runs_left -= 1
            if not self.closure_runs_left:  # from the next execution on, each variant is compiled again, generated
                self.variants = {}
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
            if variant is None:
                variant = Compiler(self.schema, self.fragments, self.basic_fields, None, self._generator()).root(
                    self.operation, self.root_type
                )
                self.variants[()] = variant
            return variant
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
            if len(self.variants) >= MAX_VARIANTS:
                return None
            decisions = {id(directive): value for directive, value in zip(self.conditions, values, strict=True)}
            variant = Compiler(self.schema, self.fragments, self.basic_fields, decisions, self._generator()).root(
                self.operation, self.root_type
            )
            self.variants[values] = variant
        return variant


async def _awaited_result(data: Any, run: Run) -> ExecutionResult:
    try:
        completed = await data
    except GraphQLError as error:
        run.errors.add(error, None)
        return ExecutionResult(None, run.errors.errors or None)
    return ExecutionResult(completed, run.errors.errors or None)
