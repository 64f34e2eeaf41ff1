"""How many count queries a document could run: its ``totalCount`` fields, with its fragments expanded.

Each connection's ``totalCount`` is one ``count(*)`` over the viewer's whole filtered list (graph/types/pagination.py),
linear in their rows: a user can create characters at ~200 a second, and with 200,000 one count took 240 ms, so
thirty aliased ``characters(search: ...) { totalCount }`` held the database for 3.3 s per request. The other limits
(graph/document_cost.py, graph/result_size.py) count fields and values, each cheap; this counts the one field whose
cost grows with the data. One pass, each fragment measured once, as graph/document_cost.py does.
"""

from __future__ import annotations

from collections.abc import Mapping

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

from graph.document_cost import CAP, count, dependencies_first, refusal

COUNT_FIELD = "totalCount"


def total_counts(document: DocumentNode) -> int:
    """The ``totalCount`` fields of every operation, each spread counting its fragment's (capped at ``CAP``)."""
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    measured: dict[str, int] = {}
    for name in dependencies_first(fragments):
        measured[name] = _counts_in(fragments[name].selection_set, measured)
    total = sum(
        _counts_in(definition.selection_set, measured)
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
    )
    return min(total, CAP)


def counts_over_limit(document: DocumentNode, limit: int) -> list[GraphQLError]:
    """The refusal of a document that asks for more than ``limit`` totalCounts (none when it fits)."""
    counts = total_counts(document)
    if counts <= limit:
        return []
    return [refusal(
        f"The document asks for {count(counts)} totalCount fields with its fragments expanded (each one counts a "
        f"whole list); at most {limit} are allowed: ask for the others in another request.",
        COUNT_FIELD, limit, counts,
    )]


def _counts_in(selection_set: SelectionSetNode, fragments: Mapping[str, int]) -> int:
    counts = 0
    spread: set[str] = set()  # graphql-core collects a selection set's fragments once: they run once
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            counts += 1 if selection.name.value == COUNT_FIELD else 0
            if selection.selection_set:
                counts += _counts_in(selection.selection_set, fragments)
        elif isinstance(selection, InlineFragmentNode):
            counts += _counts_in(selection.selection_set, fragments)
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in spread:
            spread.add(selection.name.value)
            counts += fragments.get(selection.name.value, 0)  # unknown or cyclic: validation reports it
        counts = min(counts, CAP)
    return counts
