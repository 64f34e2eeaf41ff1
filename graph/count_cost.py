"""How many whole-list reads a document could run: its ``totalCount`` fields and its name searches, with its
fragments expanded.

Each connection's ``totalCount`` is one ``count(*)`` over the viewer's whole filtered list (graph/types/pagination.py),
linear in their rows: a user can create characters at ~200 a second, and with 200,000 one count took 240 ms, so
thirty aliased ``characters(search: ...) { totalCount }`` held the database for 3.3 s per request. A name search
(``characters(search:)``) of 1-2 characters, or one matching none of the viewer's names, cannot use the trigram
index: its page alone reads every one of the viewer's rows (150 ms at 200,000; thirty aliased ones 1.1 s). The other
limits (graph/document_cost.py, graph/result_size.py) count fields and values, each cheap; this counts the fields
whose cost grows with the data, each against its own bound and ``measure``, so a refusal says which to split. One
pass, each fragment measured once, as graph/document_cost.py does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    NullValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
)

from graph.document_cost import CAP, count, dependencies_first, refusal

COUNT_FIELD = "totalCount"
# Lists with a search argument a document may ask for (checked here, beside graph/schema.py's MAX_TOTAL_COUNTS;
# stated in the schema's description of `search`): a 1-2 character search, or one matching no name, cannot use the
# trigram index and reads every one of the viewer's rows (150 ms at 200,000 characters). Apart from totalCount, so a
# refusal says which to split; 5, as a search with its totalCount reads the list twice: five such cost what ten
# counts do. A search box asks for one.
MAX_SEARCHES = 5
# Any field's argument of this name is a name search (today characters' only); a literal null searches nothing,
# a variable may search (its value is not looked at: the bound is the document's, whatever it is sent with).
SEARCH_ARGUMENT = "search"
SEARCHES_MEASURE = "searches"


class ListReads(NamedTuple):
    """What a document (or a fragment, once) could read whole: ``totalCount`` fields, and fields searching."""

    counts: int
    searches: int

    def plus(self, other: ListReads) -> ListReads:
        return ListReads(min(self.counts + other.counts, CAP), min(self.searches + other.searches, CAP))


NONE = ListReads(0, 0)


def list_reads(document: DocumentNode) -> ListReads:
    """The ``totalCount`` fields and searches of every operation, each spread counting its fragment's (each capped
    at ``CAP``)."""
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    measured: dict[str, ListReads] = {}
    for name in dependencies_first(fragments):
        measured[name] = _reads_in(fragments[name].selection_set, measured)
    total = NONE
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            total = total.plus(_reads_in(definition.selection_set, measured))
    return total


def total_counts(document: DocumentNode) -> int:
    """The ``totalCount`` fields of every operation, each spread counting its fragment's (capped at ``CAP``)."""
    return list_reads(document).counts


def counts_over_limit(document: DocumentNode, limit: int, search_limit: int) -> list[GraphQLError]:
    """The refusals of a document that asks for more than ``limit`` totalCounts or more than ``search_limit``
    searches (none when it fits; one for each bound it passes)."""
    reads = list_reads(document)
    refusals = []
    if reads.counts > limit:
        refusals.append(refusal(
            f"The document asks for {count(reads.counts)} totalCount fields with its fragments expanded (each one "
            f"counts a whole list); at most {limit} are allowed: ask for the others in another request.",
            COUNT_FIELD, limit, reads.counts,
        ))
    if reads.searches > search_limit:
        refusals.append(refusal(
            f"The document asks for {count(reads.searches)} lists with a search argument with its fragments "
            f"expanded (a short search reads the whole list); at most {search_limit} are allowed: ask for the "
            "others in another request.",
            SEARCHES_MEASURE, search_limit, reads.searches,
        ))
    return refusals


def _searches(field: FieldNode) -> bool:
    return any(
        argument.name.value == SEARCH_ARGUMENT and not isinstance(argument.value, NullValueNode)
        for argument in field.arguments or ()
    )


def _reads_in(selection_set: SelectionSetNode, fragments: Mapping[str, ListReads]) -> ListReads:
    reads = NONE
    spread: set[str] = set()  # graphql-core collects a selection set's fragments once: they run once
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            reads = reads.plus(ListReads(int(selection.name.value == COUNT_FIELD), int(_searches(selection))))
            if selection.selection_set:
                reads = reads.plus(_reads_in(selection.selection_set, fragments))
        elif isinstance(selection, InlineFragmentNode):
            reads = reads.plus(_reads_in(selection.selection_set, fragments))
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in spread:
            spread.add(selection.name.value)
            reads = reads.plus(fragments.get(selection.name.value, NONE))  # unknown or cyclic: validation reports it
    return reads
