"""How many values a document's response could hold, lists multiplied by how long they may be.

The cost gate (graph/document_cost.py) counts the fields a document names,
with its fragments expanded; but a field under a list is completed once per
item. Thirty aliases of ``characters(first: 100)`` spreading one fragment of
16 fields passed every limit at 2.3 KB and cost 225 ms of CPU (bench/abuse.py):
100 rows x 16 fields x 30. Here each field counts once per item of every list
above it: a connection's ``edges`` as many as its ``first`` asks for (the
largest page when ``first`` is a variable, the default page when it is
absent), other lists by the bound the schema's data keeps them to
(``ListBounds``). Introspection is counted apart (``introspection=True``):
its data is static, so what ``__schema`` selects counts by the schema's real
totals (below its walk of every type, each type's lists by their average,
which makes a full walk's sum exact) and a type reached any other way by the
schema's largest. A 0.8 KB walk of every field's type's fields, 29 times
aliased, cost 222 ms when ``__schema`` counted a fixed 4,000.

Like the cost gate, this is one pass that measures each fragment once (a
spread adds its fragment's measure), in the order ``document_cost`` gives;
a fragment whose lists take the page above it (a Relay connection fragment
under ``first: 5`` counts 5 rows) is measured again, when first met, for
each page it is spread under (at most ``max_page`` + 1 values; a spread
closing a cycle counts nothing):
linear in the document, with the exponential size seen as a number capped at
``CAP``. It reads types from a graphql-core schema built from our SDL, so
only public graphql-core and strawberry APIs are used.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLType,
    GraphQLUnionType,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SchemaMetaFieldDef,
    SelectionSetNode,
    TypeMetaFieldDef,
    get_named_type,
    is_list_type,
)

from graph.document_cost import CAP, dependencies_first

PAGE_ARGUMENT = "first"
# The introspection fields any query may ask for, which no type lists among its fields.
META_FIELDS = {"__type": TypeMetaFieldDef, "__schema": SchemaMetaFieldDef}


@dataclass(frozen=True, slots=True)
class ListBounds:
    """How many items each list field may hold.

    ``fixed`` names the lists that are not pages, by (type, field); every
    list of the schema must be a page or have an entry (tests/test_result_size.py).
    """

    default_page: int
    max_page: int
    fixed: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # Introspection lists below ``__schema``'s ``types`` and ``directives``: their average over all types (fields,
    # args: over all fields), which makes a full walk's sum exact.
    averages: Mapping[tuple[str, str], float] = field(default_factory=dict)
    # Leaves worth more than one value, by scalar type: a JSON object is many values to decode and encode.
    scalar_weights: Mapping[str, int] = field(default_factory=dict)

    def takes_page(self, parent: str, name: str, averaged: bool) -> bool:
        """Whether the list counts by the page above it (it has no bound of its own)."""
        return (parent, name) not in self.fixed and not (averaged and (parent, name) in self.averages)

    def items(self, parent: str, name: str, page: int | None, averaged: bool = False) -> float:
        if averaged:
            average = self.averages.get((parent, name))
            if average is not None:
                return average
        bound = self.fixed.get((parent, name))
        if bound is not None:
            return bound
        return self.max_page if page is None else page


# Introspection fields whose items are each one of the schema's types or directives, walked once each: below them,
# lists count by their average.
WALKS = {("__Schema", "types"), ("__Schema", "directives")}


def introspection_averages(schema: GraphQLSchema) -> dict[tuple[str, str], float]:
    """Introspection lists, by their average over everything ``__schema`` lists (``__Field.args``: over all fields)."""
    types = list(schema.type_map.values())
    objects = [t for t in types if isinstance(t, GraphQLObjectType | GraphQLInterfaceType)]
    fields = [f for t in objects for f in t.fields.values()]
    directives = list(schema.directives)

    def average(total: int, over: list[Any]) -> float:
        return total / max(1, len(over))

    return {
        ("__Type", "fields"): average(len(fields), types),
        ("__Type", "inputFields"): average(
            sum(len(t.fields) for t in types if isinstance(t, GraphQLInputObjectType)), types
        ),
        ("__Type", "enumValues"): average(sum(len(t.values) for t in types if isinstance(t, GraphQLEnumType)), types),
        ("__Type", "interfaces"): average(sum(len(t.interfaces) for t in objects), types),
        ("__Type", "possibleTypes"): average(
            sum(
                len(schema.get_possible_types(t))
                for t in types
                if isinstance(t, GraphQLInterfaceType | GraphQLUnionType)
            ),
            types,
        ),
        ("__Field", "args"): average(sum(len(f.args) for f in fields), fields),
        ("__Directive", "args"): average(sum(len(d.args) for d in schema.directives), directives),
        ("__Directive", "locations"): average(sum(len(d.locations) for d in schema.directives), directives),
    }


def introspection_bounds(schema: GraphQLSchema) -> dict[tuple[str, str], int]:
    """Introspection lists, by the schema's largest (below ``__schema``'s walks: ``introspection_averages``)."""
    types = list(schema.type_map.values())
    objects = [t for t in types if isinstance(t, GraphQLObjectType | GraphQLInterfaceType)]
    fields = [f for t in objects for f in t.fields.values()]

    def largest(sizes: Iterable[int]) -> int:
        return max(sizes, default=1) or 1

    return {
        ("__Type", "fields"): largest(len(t.fields) for t in objects),
        ("__Type", "inputFields"): largest(len(t.fields) for t in types if isinstance(t, GraphQLInputObjectType)),
        ("__Type", "enumValues"): largest(len(t.values) for t in types if isinstance(t, GraphQLEnumType)),
        ("__Type", "interfaces"): largest(len(t.interfaces) for t in objects),
        ("__Type", "possibleTypes"): largest(
            len(schema.get_possible_types(t)) for t in types if isinstance(t, GraphQLInterfaceType | GraphQLUnionType)
        ),
        ("__Field", "args"): largest(len(f.args) for f in fields),
        ("__Directive", "args"): largest(len(d.args) for d in schema.directives),
        ("__Directive", "locations"): largest(len(d.locations) for d in schema.directives),
        ("__Schema", "types"): len(types),
        ("__Schema", "directives"): len(schema.directives),
    }


def estimate_results(
    document: DocumentNode, schema: GraphQLSchema, bounds: ListBounds, introspection: bool = False
) -> int:
    """The most values any operation of ``document`` could answer with (capped at ``CAP``).

    ``introspection``: count only what ``__schema`` and ``__type`` answer (they cost about 1.8 us a value, data
    about 4, and have their own limit); otherwise count them 1 each.
    """
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    walker = _Walker(schema, bounds, fragments, introspection)
    largest = 0.0
    try:
        for name in dependencies_first(fragments):
            walker.fragment(name, _Place(None, False))
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode):
                root = schema.get_root_type(definition.operation)
                largest = max(largest, walker.selection_set(definition.selection_set, root, _Place(None, False)))
    except RecursionError:  # graphql-core's parser refuses nesting past ~190 levels; should a caller not: too large
        return CAP
    return min(CAP, math.ceil(largest - 1e-6))  # (averages' sums are exact up to rounding)


@dataclass(frozen=True, slots=True)
class _Place:
    """What a selection set's lists count by: ``page``, the ``first`` of the field above, if any; ``averaged``:
    below ``__schema``'s walk of every type (or directive)."""

    page: int | None
    averaged: bool


class _Walker:
    def __init__(
        self,
        schema: GraphQLSchema,
        bounds: ListBounds,
        fragments: Mapping[str, FragmentDefinitionNode],
        introspection: bool,
    ) -> None:
        self.schema = schema
        self.introspection = introspection
        self.bounds = bounds
        self.fragments = fragments
        # Each fragment is measured once per place it is spread in: without a page and outside __schema's walk in
        # dependencies-first order (no recursion), others when first spread there.
        self.fragment_sizes: dict[tuple[str, _Place], float] = {}
        self.measuring: set[tuple[str, _Place]] = set()
        # Whether a fragment's size depends on the page above it (a list of its, or of a fragment it spreads, takes
        # that page): one that does not is measured once whatever the pages it is spread under.
        self.takes_page: dict[tuple[str, bool], bool] = {}
        self.page_taken = False  # by the fragment being measured

    def fragment(self, name: str, place: _Place) -> float:
        """Values one object answers with for a spread of ``name`` (unknown, or closing a cycle: nothing, as
        validation reports it)."""
        takes_page = self.takes_page.get((name, place.averaged))
        key = (name, place if takes_page is not False else _Place(None, place.averaged))
        size = self.fragment_sizes.get(key)
        if size is not None:
            self.page_taken = self.page_taken or bool(takes_page)
            return size
        definition = self.fragments.get(name)
        if definition is None or key in self.measuring:
            return 0
        self.measuring.add(key)
        outer, self.page_taken = self.page_taken, False
        size = self.selection_set(
            definition.selection_set, self.schema.get_type(definition.type_condition.name.value), place
        )
        self.takes_page[(name, place.averaged)] = self.page_taken
        self.page_taken = outer or self.page_taken
        self.measuring.discard(key)
        self.fragment_sizes[key] = size
        return size

    def selection_set(self, selections: SelectionSetNode, parent: GraphQLNamedType | None, place: _Place) -> float:
        """Values one object of ``parent`` answers with."""
        total = 0.0
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent, place)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner = parent if condition is None else self.schema.get_type(condition.name.value)
                total += self.selection_set(selection.selection_set, inner, place)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.fragment(selection.name.value, place)
            if total >= CAP:
                return CAP
        return total

    def field(self, node: FieldNode, parent: GraphQLNamedType | None, place: _Place) -> float:
        name = node.name.value
        if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return 1  # unknown (validation reports it)
        if parent is self.schema.query_type and name in META_FIELDS:  # (on other types: unknown)
            if not self.introspection:
                return 1
            definition = META_FIELDS[name]
        elif self.introspection and parent is self.schema.query_type:
            return 0
        else:
            definition = parent.fields.get(name)
        if definition is None:  # __typename, or unknown
            return 1
        page = self._page(node) if PAGE_ARGUMENT in definition.args else place.page
        listed = _is_list(definition.type)
        if listed and PAGE_ARGUMENT not in definition.args:
            self.page_taken = self.page_taken or self.bounds.takes_page(parent.name, name, place.averaged)
        items = self.bounds.items(parent.name, name, page, place.averaged) if listed else 1
        named = get_named_type(definition.type)
        if node.selection_set is None:
            return min(CAP, items * self.bounds.scalar_weights.get(named.name, 1))
        # Below a walk of every type, lists count by their average; a type reached any other way by the largest.
        averaged = (parent.name, name) in WALKS or (place.averaged and named.name != "__Type")
        # A page is used by the first list under the field that asked for it.
        below = self.selection_set(node.selection_set, named, _Place(None if listed else page, averaged))
        return min(CAP, items * (1 + below))

    def _page(self, node: FieldNode) -> int:
        argument = next((a for a in node.arguments or () if a.name.value == PAGE_ARGUMENT), None)
        if argument is None:
            return self.bounds.default_page
        if isinstance(argument.value, IntValueNode) and len(argument.value.value) <= 6:  # (no 4,300-digit int())
            return max(0, min(int(argument.value.value), self.bounds.max_page))
        return self.bounds.max_page  # a variable: the largest it may be


def _is_list(type_: GraphQLType) -> bool:
    return is_list_type(type_.of_type if isinstance(type_, GraphQLNonNull) else type_)
