"""The schema's own work at each stage of an operation, run straight from strawberry's extensions runner.

Strawberry runs an operation's stages inside the context managers of its
extensions runner: ``operation()`` around them all, ``parsing()``,
``validation()`` and ``executing()``, ``on_stream_result`` around each result
a stream yields. For each request and stage it builds one anew for every
extension (each hook looked up on the class, inspected, wrapped in a
``contextlib`` manager, entered through an exit stack): about 170 Python
calls a request for one extension's three hooks, a fifth of all a
``{ __typename }`` request makes.

The schema's own work (graph/schema.py: the document cache, the limits,
counting operations) needs none of that. ``PortraitsSchema`` hands strawberry
a ``StageRunner`` through ``create_extensions_runner``, the schema's public
method for making the runner, and each of its stages calls the schema's
``Stages`` directly: first in, last out, as the first extension's hooks were.
Extensions given to the schema (``build_schema(extensions=...)``) still run
inside ours through strawberry's own context managers; with none, the
operation and stream-result stages cost nothing.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from strawberry.extensions import SchemaExtension
from strawberry.extensions.context import (
    ExecutingContextManager,
    ExtensionContextManagerBase,
    OperationContextManager,
    ParsingContextManager,
    StreamResultContextManager,
    ValidationContextManager,
)
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext, StreamExecutionResult


class Stages(Protocol):
    """What a schema does at each stage of an operation; each call gets the operation's ``ExecutionContext``."""

    def parsing(self, execution: ExecutionContext) -> None:
        """Before strawberry parses (it skips parsing when ``graphql_document`` is set here)."""

    def parsed(self, execution: ExecutionContext) -> None:
        """After parsing, whether or not it failed."""

    def validating(self, execution: ExecutionContext) -> int:
        """Before strawberry validates (it skips validation when ``pre_execution_errors`` is set here); the value
        returned is handed to ``validated``."""

    def validated(self, execution: ExecutionContext, step: int) -> None:
        """After validation, unless it raised."""

    def executed(self, execution: ExecutionContext, *, failed: bool) -> None:
        """After execution (for a subscription, after its start); ``failed``: it raised."""


class StageRunner(SchemaExtensionsRunner):
    """Strawberry's extensions runner, with ``stages`` run first in and last out of every stage."""

    def __init__(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension], stages: Stages
    ) -> None:
        super().__init__(execution_context, extensions)
        self.stages = stages

    def operation(self) -> OperationContextManager:
        return OperationContextManager(self.extensions) if self.extensions else _NO_OPERATION_HOOKS

    def parsing(self) -> ParsingContextManager:
        return _Parsing(self.extensions, self.execution_context, self.stages)

    def validation(self) -> ValidationContextManager:
        return _Validation(self.extensions, self.execution_context, self.stages)

    def executing(self) -> ExecutingContextManager:
        return _Executing(self.extensions, self.execution_context, self.stages)

    def on_stream_result(self, result: StreamExecutionResult) -> StreamResultContextManager:
        if self.extensions:
            return StreamResultContextManager(self.extensions, result)
        return _NoStreamResultHooks(result)


class _Stage(ExtensionContextManagerBase):
    """Our step around the other extensions' hooks for this stage (strawberry's manager, entered only when any)."""

    def __init__(self, extensions: list[SchemaExtension], execution: ExecutionContext, stages: Stages) -> None:
        super().__init__(extensions)
        self.execution = execution
        self.stages = stages

    def begin(self) -> None:
        """Our step before the stage."""

    def end(self, *, failed: bool) -> None:
        """Our step after it; ``failed``: the stage raised."""

    def __enter__(self) -> None:
        self.begin()
        if self.hooks:
            try:
                super().__enter__()
            except BaseException:
                self.end(failed=True)
                raise

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.hooks:
            try:
                super().__exit__(kind, error, trace)
            except BaseException:
                self.end(failed=True)
                raise
        self.end(failed=kind is not None)

    async def __aenter__(self) -> None:
        self.begin()
        if self.hooks:
            try:
                await super().__aenter__()
            except BaseException:
                self.end(failed=True)
                raise

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.hooks:
            try:
                await super().__aexit__(kind, error, trace)
            except BaseException:
                self.end(failed=True)
                raise
        self.end(failed=kind is not None)


class _Parsing(_Stage, ParsingContextManager):
    def begin(self) -> None:
        self.stages.parsing(self.execution)

    def end(self, *, failed: bool) -> None:
        self.stages.parsed(self.execution)


class _Validation(_Stage, ValidationContextManager):
    step = 0

    def begin(self) -> None:
        self.step = self.stages.validating(self.execution)

    def end(self, *, failed: bool) -> None:
        if not failed:  # (a hook generator's code after its yield does not run when the stage raised)
            self.stages.validated(self.execution, self.step)


class _Executing(_Stage, ExecutingContextManager):
    def end(self, *, failed: bool) -> None:
        self.stages.executed(self.execution, failed=failed)


class _NothingToEnter:
    """Entering and leaving, sync or async, do nothing: the stage managers below when no extension hooks them."""

    def __enter__(self) -> None:
        pass

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        pass

    async def __aenter__(self) -> None:
        pass

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        pass


class _NoOperationHooks(_NothingToEnter, OperationContextManager):
    """``operation()`` when no extension hooks it: nothing to enter. One for all requests: it holds nothing."""

    def __init__(self) -> None:
        super().__init__([])


_NO_OPERATION_HOOKS = _NoOperationHooks()


class _NoStreamResultHooks(_NothingToEnter, StreamResultContextManager):
    """``on_stream_result`` when no extension hooks it (each subscription event enters one)."""

    def __init__(self, result: StreamExecutionResult) -> None:
        super().__init__([], result)
