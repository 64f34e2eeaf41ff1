# ruff: noqa: BLE001 - every exception a resolver or a completion raises is a field error, as in graphql-core.
"""An operation compiled into closures that execute it as graphql-core's Executor would, without collecting
fields, building a Path and an info object, and dispatching on the return type for every field.

Each closure mirrors a method of graphql-core 3.3's Executor (graphql/execution/executor.py): ``_field`` is
execute_field with handle_field_error, ``_object`` execute_fields, ``_serial`` execute_fields_serially,
``_complete*`` complete_value for each kind of type, ``_list`` complete_list_value. Resolvers get what
graphql-core gives them (``field_def.resolve(source, info, **args)``, info from the executor's
``build_resolve_info``); fields a ``BasicFields`` lookup names are read inline, without info (what strawberry's
own resolver for such a field does). Results are the same values, errors the same errors in the same order,
awaitables awaited at the same points (one directly, several gathered with graphql-core's gather_with_cancel).

Anything else (abstract types, is_type_of, introspection's __schema and __type, directives other than
@skip/@include) raises ``Unsupported`` while the plan is built: graphql-core runs that operation.

With an ``ObjectGenerator`` (graph/plans/generate.py), an object's selection set runs as one generated function
instead of ``_object`` over its fields' closures. The closures are built either way (``FieldSpec``,
``Completion``): the generated code calls them for whatever it does not write out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    GraphQLBoolean,
    GraphQLField,
    GraphQLID,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    GraphQLString,
    OperationDefinitionNode,
    VariableNode,
    get_argument_values,
    is_abstract_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
    located_error,
)
from graphql.pyutils import Undefined, inspect, is_iterable
from graphql.type import TypeNameMetaFieldDef

from graph.plans.collect import Decisions, Unsupported, collect
from graph.plans.runtime import COROUTINE, Location, Run, expected_iterable, field_path, gather_into, to_path

# (source, location of the object, run) -> the completed object, or a coroutine of it
ObjectFn = Callable[[Any, Location, Run], Any]
# (value, location of the value, run) -> the completed value, or a coroutine of it; raises a field error
CompleteFn = Callable[[Any, Location, Run], Any]
FieldFn = Callable[[Any, Location, Run], Any]
# A field read inline: (read, name) where read(source, name) is the value (strawberry: default_resolver, getattr)
Reader = tuple[Callable[[Any, str], Any], str]
BasicFields = Callable[[str, str], Reader | None]
"""(type name, field name) -> how to read a field that has no resolver of its own, or None (call its resolver)."""

INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})
# Scalars whose coerce_output_value returns a value of this exact class unchanged.
IDENTITY: dict[object, type] = {GraphQLString: str, GraphQLID: str, GraphQLBoolean: bool}
# Argument values a plan may compute once and share between calls: nothing a resolver could change (and, below,
# what graphql-core shares between calls itself).
IMMUTABLE = (str, int, float, bool, type(None))


@dataclass(frozen=True, slots=True)
class Completion:
    """How a value of one output type is completed: ``complete`` (the closure), and what generated code
    (graph/plans/generate.py) inlines in its place: the null message, the leaf type, the object's fields, the
    list's items."""

    complete: CompleteFn
    # graphql-core's error when the type is non-null and the value is null; None: a nullable type.
    null: str | None
    leaf: GraphQLLeafType | None = None
    # execute_fields of an object type's selection (generated, or closures), and that selection compiled
    fields: ObjectFn | None = None
    specs: list[FieldSpec] | None = None
    item: Completion | None = None


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One response key of an object's selection, compiled: ``execute`` is its closure; the rest says what it
    does, for code generated in its place."""

    key: str
    nodes: list[FieldNode]
    parent: GraphQLObjectType
    execute: FieldFn
    # None for __typename; then ``execute`` returns the parent's name
    field_def: GraphQLField | None
    # A basic field (read inline, completed by ``completion``), or None (its resolver called by ``execute``).
    reader: Reader | None
    completion: Completion | None

    @property
    def non_null(self) -> bool:
        return self.field_def is not None and is_non_null_type(self.field_def.type)


class ObjectGenerator(Protocol):
    """Makes one function of an object's compiled fields (graph/plans/generate.py), or None: closures run it."""

    def object_fields(self, parent: GraphQLObjectType, specs: list[FieldSpec]) -> ObjectFn | None: ...


class Compiler:
    """Builds the closures of one operation for one set of @skip/@include decisions; with a ``generator``, each
    object's selection set is generated code where the generator can make it (its fields stay closures too)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        basic_fields: BasicFields,
        decisions: Decisions,
        generator: ObjectGenerator | None = None,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.basic_fields = basic_fields
        self.decisions = decisions
        self.generator = generator
        # Fields compiled (a response key of an object's selection each): what the plan cache counts of a plan's size.
        self.fields = 0

    def root(self, operation: OperationDefinitionNode, root_type: GraphQLObjectType) -> tuple[ObjectFn, ObjectFn]:
        """The root fields, executed in parallel and serially (mutations; execute_operation's ``serially``)."""
        grouped = collect(self.schema, self.fragments, root_type, [operation.selection_set], self.decisions)
        fields = [(spec.key, spec.execute) for spec in self._specs(root_type, grouped)]
        return _object(fields), _serial(fields)

    def _specs(self, parent: GraphQLObjectType, grouped: dict[str, list[FieldNode]]) -> list[FieldSpec]:
        return [self._field(parent, key, nodes) for key, nodes in grouped.items()]

    def _object_fields(
        self, parent: GraphQLObjectType, grouped: dict[str, list[FieldNode]]
    ) -> tuple[ObjectFn, list[FieldSpec]]:
        specs = self._specs(parent, grouped)
        if self.generator is not None:
            generated = self.generator.object_fields(parent, specs)
            if generated is not None:
                return generated, specs
        return _object([(spec.key, spec.execute) for spec in specs]), specs

    def _field(self, parent: GraphQLObjectType, key: str, nodes: list[FieldNode]) -> FieldSpec:
        self.fields += 1
        name = nodes[0].name.value
        if name in INTROSPECTION_ROOTS:
            raise Unsupported(f"introspection field {name}")
        field_def = self.schema.get_field(parent, name)
        if field_def is None:
            raise Unsupported(f"unknown field {parent.name}.{name}")
        if field_def is TypeNameMetaFieldDef:
            typename = parent.name
            return FieldSpec(key, nodes, parent, lambda _source, _location, _run: typename, None, None, None)
        completion = self._completion(field_def.type, parent.name, name, nodes)
        reader = self.basic_fields(parent.name, name)
        if reader is not None and not field_def.args and not nodes[0].arguments:
            execute = _basic_field(key, parent.name, nodes, field_def.type, reader, completion.complete)
            return FieldSpec(key, nodes, parent, execute, field_def, reader, completion)
        execute = _resolved_field(key, parent, nodes, field_def, completion.complete)
        return FieldSpec(key, nodes, parent, execute, field_def, None, completion)

    def _completion(
        self, type_: GraphQLOutputType, parent: str, field: str, nodes: list[FieldNode], non_null: bool = False
    ) -> Completion:
        """complete_value for ``type_``; ``non_null``: the type wrapped it in NonNull, so a null (None or
        Undefined: the only values each completion turns into null) raises graphql-core's error instead."""
        if is_non_null_type(type_):
            assert isinstance(type_, GraphQLNonNull)
            return self._completion(type_.of_type, parent, field, nodes, non_null=True)
        null = f"Cannot return null for non-nullable field {parent}.{field}." if non_null else None
        if is_list_type(type_):
            assert isinstance(type_, GraphQLList)
            item_type: GraphQLOutputType = type_.of_type
            item = self._completion(item_type, parent, field, nodes)
            return Completion(_list(item_type, item.complete, parent, field, nodes, null), null, item=item)
        if is_leaf_type(type_):
            assert isinstance(type_, GraphQLLeafType)
            return Completion(_leaf(type_, null), null, leaf=type_)
        if is_abstract_type(type_):
            raise Unsupported(f"abstract type {type_}")
        if is_object_type(type_):
            assert isinstance(type_, GraphQLObjectType)
            if type_.is_type_of is not None:
                raise Unsupported(f"is_type_of on {type_.name}")
            selection_sets = [node.selection_set for node in nodes if node.selection_set is not None]
            grouped = collect(self.schema, self.fragments, type_, selection_sets, self.decisions)
            fields, specs = self._object_fields(type_, grouped)
            return Completion(_object_value(fields, null), null, fields=fields, specs=specs)
        raise Unsupported(f"output type {type_}")


def _arguments(field_def: GraphQLField, node: FieldNode) -> dict[str, Any] | None:
    """The field's arguments computed once when nothing in them varies or can be changed, else None."""
    if not field_def.args and not node.arguments:
        return {}
    if any(isinstance(argument.value, VariableNode) for argument in node.arguments or ()):
        return None
    try:
        values = get_argument_values(field_def, node)
        again = get_argument_values(field_def, node)
    except Exception:  # computed at each call instead, where the error belongs to the field
        return None
    # A value graphql-core hands out as the very same object on every call (an enum member: strawberry's enum
    # type maps the literal or default to its one member) is shared already; sharing it once more changes nothing.
    if all(type(value) in IMMUTABLE or value is again[name] for name, value in values.items()):
        return values
    return None


def _basic_field(
    key: str, parent: str, nodes: list[FieldNode], return_type: GraphQLOutputType, reader: Reader,
    complete: CompleteFn,
) -> FieldFn:
    """A field without a resolver of its own: read inline, no info (strawberry's resolver for a basic field does
    ``default_resolver(source, python_name)`` and nothing else; our schema passes no exception_handlers)."""
    read, attribute = reader
    non_null = is_non_null_type(return_type)
    fast = identity_class(return_type)
    awaited = awaited_field(key, parent, nodes, non_null, complete)
    completed_later = field_completed_later(key, parent, nodes, non_null)

    if fast is not None:

        def leaf_field(source: Any, location: Location, run: Run) -> Any:
            try:
                value = read(source, attribute)
                if type(value) is fast:
                    return value
                if run.is_awaitable(value):
                    return awaited(value, location, run)
                return complete(value, (location, key, parent), run)
            except Exception as raw:
                run.field_error(raw, nodes, (location, key, parent), non_null)
                return None

        return leaf_field

    def basic_field(source: Any, location: Location, run: Run) -> Any:
        try:
            value = read(source, attribute)
            if run.is_awaitable(value):
                return awaited(value, location, run)
            completed = complete(value, (location, key, parent), run)
            if type(completed) is COROUTINE:
                return completed_later(completed, location, run)
            return completed
        except Exception as raw:
            run.field_error(raw, nodes, (location, key, parent), non_null)
            return None

    return basic_field


def _resolved_field(
    key: str, parent: GraphQLObjectType, nodes: list[FieldNode], field_def: GraphQLField, complete: CompleteFn
) -> FieldFn:
    """execute_field: info built, arguments coerced, the resolver called, its value completed."""
    parent_name = parent.name
    non_null = is_non_null_type(field_def.type)
    node = nodes[0]
    fixed_arguments = _arguments(field_def, node)
    resolve = field_def.resolve
    awaited = awaited_field(key, parent_name, nodes, non_null, complete)
    completed_later = field_completed_later(key, parent_name, nodes, non_null)

    def resolved_field(source: Any, location: Location, run: Run) -> Any:
        field_location = (location, key, parent_name)
        info = run.executor.build_resolve_info(field_def, nodes, parent, field_path(field_location))
        try:
            arguments = fixed_arguments
            if arguments is None:
                arguments = get_argument_values(field_def, node, run.variable_values, None, run.hide_suggestions)
            result = (resolve or run.field_resolver)(source, info, **arguments)
            if run.is_awaitable(result):
                return awaited(result, location, run)
            completed = complete(result, field_location, run)
            if type(completed) is COROUTINE:
                return completed_later(completed, location, run)
            return completed
        except Exception as raw:
            run.field_error(raw, nodes, field_location, non_null)
            return None

    return resolved_field


def awaited_field(
    key: str, parent: str, nodes: list[FieldNode], non_null: bool, complete: CompleteFn
) -> Callable[[Any, Location, Run], Any]:
    """complete_awaitable_value: the resolver's awaitable awaited, then completed."""

    async def awaited(result: Any, location: Location, run: Run) -> Any:
        field_location = (location, key, parent)
        try:
            resolved = await result
            completed = complete(resolved, field_location, run)
            if type(completed) is COROUTINE:
                completed = await completed
        except Exception as raw:
            run.field_error(raw, nodes, field_location, non_null)
            completed = None
        return completed

    return awaited


def field_completed_later(
    key: str, parent: str, nodes: list[FieldNode], non_null: bool
) -> Callable[[Any, Location, Run], Any]:
    """execute_field's await_completed: a completion that awaits (an object or list with pending fields)."""

    async def completed_later(completed: Any, location: Location, run: Run) -> Any:
        try:
            return await completed
        except Exception as raw:
            run.field_error(raw, nodes, (location, key, parent), non_null)
            return None

    return completed_later


def _object(fields: list[tuple[str, FieldFn]]) -> ObjectFn:
    """execute_fields: every field in order; pending ones awaited together afterwards."""

    def execute_fields(source: Any, location: Location, run: Run) -> Any:
        results: dict[str, Any] = {}
        pending: list[str] | None = None
        try:
            for key, field in fields:
                result = field(source, location, run)
                results[key] = result
                if type(result) is COROUTINE:
                    if pending is None:
                        pending = [key]
                    else:
                        pending.append(key)
        except Exception:
            if pending:
                run.settle_in_background([results[key] for key in pending])
            raise
        if pending is None:
            return results
        return gather_into(results, pending)

    return execute_fields


def _serial(fields: list[tuple[str, FieldFn]]) -> ObjectFn:
    """execute_fields_serially: each root field completed (awaited) before the next one starts."""

    def execute_serially(source: Any, location: Location, run: Run) -> Any:
        results: dict[str, Any] = {}
        for index, (key, field) in enumerate(fields):
            result = field(source, location, run)
            if type(result) is COROUTINE:
                return _continue_serially(results, key, result, fields[index + 1:], source, location, run)
            results[key] = result
        return results

    return execute_serially


async def _continue_serially(
    results: dict[str, Any], key: str, pending: Any, rest: list[tuple[str, FieldFn]], source: Any,
    location: Location, run: Run,
) -> dict[str, Any]:
    results[key] = await pending
    for next_key, field in rest:
        result = field(source, location, run)
        if type(result) is COROUTINE:
            result = await result
        results[next_key] = result
    return results


def _object_value(execute_fields: ObjectFn, null: str | None) -> CompleteFn:
    """complete_value for an object type (no is_type_of: checked at build)."""

    def complete_object(value: Any, location: Location, run: Run) -> Any:
        if isinstance(value, Exception):
            raise value
        if value is None or value is Undefined:
            if null is not None:
                raise TypeError(null)
            return None
        return execute_fields(value, location, run)

    return complete_object


def identity_class(type_: GraphQLOutputType) -> type | None:
    """The class whose values a (non-null) String, ID or Boolean field returns as they are."""
    if is_non_null_type(type_):
        assert isinstance(type_, GraphQLNonNull)
        type_ = type_.of_type
    return IDENTITY.get(type_)


def _leaf(type_: GraphQLLeafType, null: str | None) -> CompleteFn:
    """complete_leaf_value (coerce_output_value, never null), with the values it returns as they are passed
    straight through."""
    coerce = type_.coerce_output_value
    fast = IDENTITY.get(type_)

    def complete_leaf(value: Any, _location: Location, _run: Run) -> Any:
        if fast is not None and type(value) is fast:
            return value
        if isinstance(value, Exception):
            raise value
        if value is None or value is Undefined:
            if null is not None:
                raise TypeError(null)
            return None
        coerced = coerce(value)
        if coerced is Undefined or coerced is None:
            raise TypeError(not_coerced(type_, value, coerced))
        return coerced

    return complete_leaf


def not_coerced(type_: GraphQLLeafType, value: Any, coerced: Any) -> str:
    """graphql-core's message for a leaf whose coercion returned null."""
    return (
        f"Expected `{inspect(type_)}.coerce_output_value({inspect(value)})` to return non-nullable value,"
        f" returned: {inspect(coerced)}"
    )


def _list(
    item_type: GraphQLOutputType, complete_item: CompleteFn, parent: str, field: str, nodes: list[FieldNode],
    null: str | None,
) -> CompleteFn:
    """complete_list_value and complete_iterable_value: each item completed; pending items awaited together."""
    item_non_null = is_non_null_type(item_type)
    fast = identity_class(item_type)
    awaited_item, completed_item_later = list_item_helpers(complete_item, nodes, item_non_null)

    def add_item(item: Any, index: int, results: list[Any], location: Location, run: Run) -> bool:
        item_location = (location, index, None)
        if run.is_awaitable(item):
            results.append(awaited_item(item, item_location, run))
            return True
        try:
            completed = complete_item(item, item_location, run)
            if type(completed) is COROUTINE:
                results.append(completed_item_later(completed, item_location, run))
                return True
            results.append(completed)
        except Exception as raw:
            run.field_error(raw, nodes, item_location, item_non_null)
            results.append(None)
        return False

    async def complete_async_items(value: Any, location: Location, run: Run) -> list[Any]:
        iterator = value.__aiter__()
        early_return = getattr(iterator, "aclose", None)
        results: list[Any] = []
        pending: list[int] = []
        index = 0
        try:
            while True:
                try:
                    item = await anext(iterator)
                except StopAsyncIteration:
                    break
                except Exception as raw:
                    raise located_error(raw, nodes, field_path(location).as_list()) from raw
                if add_item(item, index, results, location, run):
                    pending.append(index)
                index += 1
        except Exception:
            if early_return is not None:
                with suppress(Exception):  # (graphql-core ignores it too)
                    await early_return()
            if pending:
                run.settle_in_background([results[index] for index in pending])
            raise
        if not pending:
            return results
        return await gather_into(results, pending)  # type: ignore[no-any-return]

    def complete_list(value: Any, location: Location, run: Run) -> Any:
        if isinstance(value, Exception):
            raise value
        if value is None or value is Undefined:
            if null is not None:
                raise TypeError(null)
            return None
        cls = type(value)
        if cls is not list and cls is not tuple:
            if run.is_async_iterable(value):
                return complete_async_items(value, location, run)
            if not is_iterable(value):
                raise expected_iterable(parent, field)
        results: list[Any] = []
        pending: list[int] | None = None
        iterator = iter(value)
        try:
            for index, item in enumerate(iterator):
                if fast is not None and type(item) is fast:
                    results.append(item)
                elif add_item(item, index, results, location, run):
                    if pending is None:
                        pending = [index]
                    else:
                        pending.append(index)
        except Exception:
            settle_list(run, results, pending, iterator)
            raise
        if pending is None:
            return results
        return gather_into(results, pending)

    return complete_list


def list_item_helpers(
    complete_item: CompleteFn, nodes: list[FieldNode], item_non_null: bool
) -> tuple[CompleteFn, CompleteFn]:
    """complete_list_value's item that is awaitable (awaited, then completed) and item whose completion awaits;
    each takes (the item or its completion, the item's location, run)."""

    async def awaited_item(item: Any, location: Location, run: Run) -> Any:
        try:
            completed = complete_item(await item, location, run)
            if type(completed) is COROUTINE:
                completed = await completed
        except Exception as raw:
            run.field_error(raw, nodes, location, item_non_null)
            return None
        return completed

    async def completed_item_later(completed: Any, location: Location, run: Run) -> Any:
        try:
            return await completed
        except Exception as raw:
            run.field_error(raw, nodes, location, item_non_null)
            return None

    return awaited_item, completed_item_later


def settle_list(run: Run, results: list[Any], pending: list[int] | None, iterator: Any) -> None:
    """A list left by an error: its pending items, and the awaitables its iterator still holds, run to their end."""
    left = [results[index] for index in pending or ()]
    left.extend(run.drain_awaitables(iterator))
    if left:
        run.settle_in_background(left)


__all__ = ["BasicFields", "Compiler", "Completion", "FieldSpec", "ObjectGenerator", "Reader", "to_path"]
