"""What a document could cost, measured in one pass over it before any validator walks it.

A fragment spread twice by a fragment that is itself spread twice doubles at
every level: a 1 KB document can stand for a response of 2^40 fields, and any
rule that follows spreads into their fragments (strawberry's depth and alias
limiters did) walks all of them. Here every fragment is measured once, in an
order where the fragments it spreads are already measured (so chains of
fragments need no recursion), and a spread adds its fragment's measure. The
time is linear in the document; the exponential size is still seen, as a
number, capped at ``CAP`` so the arithmetic stays small.

A spread of an unknown fragment, or one that closes a cycle, counts as
nothing: graphql-core's validation reports both, once the document has
passed here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)

CAP = 1 << 62
"""Counts stop growing here: far past any limit, and small enough to stay a machine-sized int."""


@dataclass(frozen=True, slots=True)
class Cost:
    """One selection set's (or operation's) measure, with its fragments expanded.

    - ``depth``: how many fields enclose its deepest field (a field whose name
      starts with ``__``, introspection, counts 0 and hides what is below it),
      as strawberry's QueryDepthLimiter counted;
    - ``aliases``: aliased fields, each spread counting its fragment's;
    - ``selections``: fields in the expanded tree, the most response keys one
      object of each type could produce;
    - ``repeats``: the most fields graphql-core's OverlappingFieldsCanBeMerged
      compares with one another under one response name: in a selection set,
      its fields with its inline fragments' and spreads' top-level fields
      merged in (each fragment once per selection set, as graphql-core
      collects them), and below a response name shared by n fields, their
      subfields counted n times (n same-named fields each with m same-named
      subfields: n x m). graphql-core compares such fields pair by pair,
      printing their arguments each time, without memo: 199 copies of a
      mutation with a 470-character argument cost 270 ms before validation
      refused them. An upper bound: n same-named fields whose subfields differ
      are counted as if they all held the largest.
    """

    depth: int = 0
    aliases: int = 0
    selections: int = 0
    repeats: int = 0


NameCounts = dict[str, tuple[int, int]]
"""Per response name of a selection set's top-level fields (fragments merged in): (fields, largest repeats below)."""


NOTHING = Cost()


@dataclass(frozen=True, slots=True)
class DocumentCost:
    """A whole document's measure: each operation's, and the fields written in it."""

    operations: tuple[tuple[OperationDefinitionNode, Cost], ...]
    fields: int
    # graphql-core compares same-named fields in fragments too, used or not
    fragment_repeats: int = 0

    @property
    def depth(self) -> int:
        return max((cost.depth for _, cost in self.operations), default=0)

    @property
    def aliases(self) -> int:
        return min(CAP, sum(cost.aliases for _, cost in self.operations))

    @property
    def selections(self) -> int:
        return min(CAP, sum(cost.selections for _, cost in self.operations))

    @property
    def repeats(self) -> int:
        return max(self.fragment_repeats, max((cost.repeats for _, cost in self.operations), default=0))


@dataclass(frozen=True, slots=True)
class Limits:
    """The most a document may cost; each is compared with ``DocumentCost``'s measure of the same name."""

    depth: int
    aliases: int
    fields: int
    selections: int
    repeats: int


def measure(document: DocumentNode) -> DocumentCost:
    """Each operation's cost and the document's field count, in time linear in the document."""
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    measured: dict[str, tuple[Cost, NameCounts]] = {}
    for name in dependencies_first(fragments):
        measured[name] = _selection_set_cost(fragments[name].selection_set, measured)
    operations = tuple(
        (definition, _selection_set_cost(definition.selection_set, measured)[0])
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
    )
    fields = sum(
        _fields_written(definition.selection_set)
        for definition in document.definitions
        if isinstance(definition, (OperationDefinitionNode, FragmentDefinitionNode))
    )
    fragment_repeats = max((cost.repeats for cost, _ in measured.values()), default=0)
    return DocumentCost(operations, fields, fragment_repeats)


def over_limits(cost: DocumentCost, limits: Limits) -> list[GraphQLError]:
    """One error per measure over its limit (none when the document fits), each naming the measure, limit and value."""
    errors: list[GraphQLError] = []
    for operation, operation_cost in cost.operations:
        if operation_cost.depth > limits.depth:
            name = operation.name.value if operation.name else "anonymous"
            errors.append(refusal(
                f"Operation '{name}' nests {operation_cost.depth} fields deep; at most {limits.depth} are allowed.",
                "depth", limits.depth, operation_cost.depth, operation,
            ))
    if cost.aliases > limits.aliases:
        errors.append(refusal(
            f"The document has {count(cost.aliases)} aliases with its fragments expanded; "
            f"at most {limits.aliases} are allowed.",
            "aliases", limits.aliases, cost.aliases,
        ))
    if cost.fields > limits.fields:
        errors.append(refusal(
            f"The document selects {cost.fields} fields; at most {limits.fields} are allowed.",
            "fields", limits.fields, cost.fields,
        ))
    if cost.selections > limits.selections:
        errors.append(refusal(
            f"The document selects {count(cost.selections)} fields with its fragments expanded; "
            f"at most {limits.selections} are allowed.",
            "selections", limits.selections, cost.selections,
        ))
    if cost.repeats > limits.repeats:
        errors.append(refusal(
            f"{count(cost.repeats)} fields share one response name in a selection set, its fragments merged "
            f"in (validation compares each pair); at most {limits.repeats} are allowed: give them aliases.",
            "repeats", limits.repeats, cost.repeats,
        ))
    return errors


def document_too_long(query: str, limit: int) -> GraphQLError | None:
    """The refusal of a document longer than ``limit`` characters, measured before it is parsed or validated."""
    if len(query) <= limit:
        return None
    return refusal(
        f"The document has {len(query)} characters; at most {limit} are allowed.", "characters", limit, len(query)
    )


def refusal(
    message: str, measure_name: str, limit: int, value: int, node: OperationDefinitionNode | None = None
) -> GraphQLError:
    return GraphQLError(
        message,
        nodes=node,
        extensions={"code": "GRAPHQL_VALIDATION_FAILED", "measure": measure_name, "limit": limit, "value": value},
    )


def count(value: int) -> str:
    return f"at least {value}" if value >= CAP else str(value)


def dependencies_first(fragments: Mapping[str, FragmentDefinitionNode]) -> list[str]:
    """Fragment names, each after the fragments it spreads (a spread closing a cycle is skipped).

    An explicit stack, not recursion: a chain of a thousand fragments is a
    short document.
    """
    spreads = {name: list(_spreads_in(fragment.selection_set)) for name, fragment in fragments.items()}
    order: list[str] = []
    state: dict[str, bool] = {}  # False: being visited; True: done
    for root in fragments:
        if root in state:
            continue
        state[root] = False
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(spreads[root]))]
        while stack:
            name, pending = stack[-1]
            following = next((n for n in pending if n in fragments and n not in state), None)
            if following is None:
                stack.pop()
                state[name] = True
                order.append(name)
                continue
            state[following] = False
            stack.append((following, iter(spreads[following])))
    return order


def _spreads_in(selection_set: SelectionSetNode) -> Iterator[str]:
    """The names of the fragments spread anywhere in ``selection_set`` (recursion as deep as the parser allowed)."""
    for selection in selection_set.selections:
        if isinstance(selection, FragmentSpreadNode):
            yield selection.name.value
        elif isinstance(selection, (FieldNode, InlineFragmentNode)) and selection.selection_set:
            yield from _spreads_in(selection.selection_set)


def _selection_set_cost(
    selection_set: SelectionSetNode, fragments: Mapping[str, tuple[Cost, NameCounts]]
) -> tuple[Cost, NameCounts]:
    """The expanded cost of ``selection_set`` and its top-level response names; a spread takes its fragment's
    measure (``NOTHING`` if there is none)."""
    depth = aliases = selections = repeats = 0
    names: NameCounts = {}
    spread: set[str] = set()
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            inner, _ = _selection_set_cost(selection.selection_set, fragments) if selection.selection_set else (
                NOTHING, {}
            )
            if selection.selection_set and not selection.name.value.startswith("__"):
                depth = max(depth, 1 + inner.depth)
            aliases += inner.aliases + (1 if selection.alias else 0)
            selections += inner.selections + 1
            _merge(names, {(selection.alias or selection.name).value: (1, inner.repeats)})
        else:
            if isinstance(selection, InlineFragmentNode):
                inner, inner_names = _selection_set_cost(selection.selection_set, fragments)
                _merge(names, inner_names)
            else:
                assert isinstance(selection, FragmentSpreadNode)
                inner, inner_names = fragments.get(selection.name.value, (NOTHING, {}))
                if selection.name.value not in spread:  # graphql-core collects a selection set's fragments once
                    spread.add(selection.name.value)
                    _merge(names, inner_names)
            depth = max(depth, inner.depth)
            aliases += inner.aliases
            selections += inner.selections
            repeats = max(repeats, inner.repeats)
        aliases = min(aliases, CAP)
        selections = min(selections, CAP)
    for fields, below in names.values():
        repeats = max(repeats, min(CAP, fields * max(1, below)))
    return Cost(depth, aliases, selections, repeats), names


def _merge(names: NameCounts, more: Mapping[str, tuple[int, int]]) -> None:
    for name, (fields, below) in more.items():
        had, had_below = names.get(name, (0, 0))
        names[name] = (min(CAP, had + fields), max(had_below, below))


def _fields_written(selection_set: SelectionSetNode) -> int:
    count = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            count += 1
        if isinstance(selection, (FieldNode, InlineFragmentNode)) and selection.selection_set:
            count += _fields_written(selection.selection_set)
    return count
