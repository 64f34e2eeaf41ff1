"""How many values a document's response could hold, lists multiplied by how long they may be.

The cost gate (graph/document_cost.py) counts the fields a document names,
with its fragments expanded; but a field under a list is completed once per
item. Thirty aliases of ``characters(first: 100)`` spreading one fragment of
16 fields passed every limit at 2.3 KB and cost 225 ms of CPU (bench/abuse.py):
100 rows x 16 fields x 30. Here each field counts once per item of every list
above it: a connection's ``edges`` as many as its ``first`` asks for (the
largest page when ``first`` is a variable, the default page when it is
absent), other lists by the bound the schema's data keeps them to
(``ListBounds``), introspection lists below ``__type`` by the schema's own
largest, and a ``__schema`` field by a fixed weight.

Like the cost gate, this is one pass that measures each fragment once (a
spread adds its fragment's measure), in the order ``document_cost`` gives:
linear in the document, with the exponential size seen as a number capped at
``CAP``. It reads types from a graphql-core schema built from our SDL, so
only public graphql-core and strawberry APIs are used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

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
    SelectionSetNode,
    TypeMetaFieldDef,
    get_named_type,
    is_list_type,
)

from graph.document_cost import CAP, dependencies_first

PAGE_ARGUMENT = "first"
# The introspection fields any query may ask for, which no type lists among its fields.
META_FIELDS = {"__type": TypeMetaFieldDef}


@dataclass(frozen=True, slots=True)
class ListBounds:
    """How many items each list field may hold.

    ``fixed`` names the lists that are not pages, by (type, field); every
    list of the schema must be a page or have an entry (tests/test_result_size.py).
    """

    default_page: int
    max_page: int
    # ``__schema`` counts this much whatever it selects: the whole schema's size, walked by every client's
    # introspection query (13 ms here: bench/abuse.py), is known; its lists' averages and largest are not the same.
    schema_field: int
    fixed: Mapping[tuple[str, str], int] = field(default_factory=dict)

    def items(self, parent: str, name: str, page: int | None) -> int:
        bound = self.fixed.get((parent, name))
        if bound is not None:
            return bound
        return self.max_page if page is None else page


def introspection_bounds(schema: GraphQLSchema) -> dict[tuple[str, str], int]:
    """Introspection lists below ``__type(name:)``, by the schema's largest (``__schema`` has a fixed weight)."""
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


def estimate_results(document: DocumentNode, schema: GraphQLSchema, bounds: ListBounds) -> int:
    """The most values any operation of ``document`` could answer with (capped at ``CAP``)."""
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    walker = _Walker(schema, bounds, fragments)
    largest = 0
    try:
        for name in dependencies_first(fragments):
            fragment = fragments[name]
            walker.fragment_sizes[name] = walker.selection_set(
                fragment.selection_set, schema.get_type(fragment.type_condition.name.value), None
            )
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode):
                root = schema.get_root_type(definition.operation)
                largest = max(largest, walker.selection_set(definition.selection_set, root, None))
    except RecursionError:  # graphql-core's parser refuses nesting past ~190 levels; should a caller not: too large
        return CAP
    return largest


class _Walker:
    def __init__(
        self, schema: GraphQLSchema, bounds: ListBounds, fragments: Mapping[str, FragmentDefinitionNode]
    ) -> None:
        self.schema = schema
        self.bounds = bounds
        self.fragments = fragments
        self.fragment_sizes: dict[str, int] = {}

    def selection_set(self, selections: SelectionSetNode, parent: GraphQLNamedType | None, page: int | None) -> int:
        """Values one object of ``parent`` answers with; ``page``: the ``first`` of the field above, if any."""
        total = 0
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent, page)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner = parent if condition is None else self.schema.get_type(condition.name.value)
                total += self.selection_set(selection.selection_set, inner, page)
            elif isinstance(selection, FragmentSpreadNode):
                # Unknown, or closing a cycle: nothing (validation reports it). Spread under a page: the
                # fragment was measured without one, so its lists count at their largest.
                total += self.fragment_sizes.get(selection.name.value, 0)
            if total >= CAP:
                return CAP
        return total

    def field(self, node: FieldNode, parent: GraphQLNamedType | None, page: int | None) -> int:
        name = node.name.value
        if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return 1  # unknown (validation reports it)
        if name == "__schema":
            return self.bounds.schema_field
        definition = META_FIELDS.get(name) if name.startswith("__") else parent.fields.get(name)
        if definition is None:  # __typename, or unknown
            return 1
        if PAGE_ARGUMENT in definition.args:
            page = self._page(node)
        items = self.bounds.items(parent.name, name, page) if _is_list(definition.type) else 1
        below = 0
        if node.selection_set is not None:
            # A page is used by the first list under the field that asked for it.
            below = self.selection_set(
                node.selection_set, get_named_type(definition.type), None if _is_list(definition.type) else page
            )
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
