"""Parsed documents and their validation errors, kept for the documents clients send again and again.

Bounded by the characters of the documents it holds, not by their number: a
parsed document costs about 120 bytes of Python objects per character (a
10,000-character one, 1.2 MB: graphql-core keeps every token, linked both
ways, for the locations of errors), so 256 distinct documents of that size,
which a count-bounded cache admitted, held 300 MB, and as much again when
the validation results kept their own documents. Here one entry holds a
document and its errors, and the least recently used go first once the
characters held pass the budget. Clients send the same few documents of a
few KB: hundreds fit.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from graphql import DocumentNode, GraphQLError, parse


@dataclass(slots=True)
class _Entry:
    document: DocumentNode
    errors: tuple[GraphQLError, ...] | None = None  # None: not validated yet


class DocumentCache:
    """Query text -> its parsed document and validation errors, least recently used out past ``max_chars``."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._chars = 0

    @property
    def chars(self) -> int:
        """The characters of the documents held now."""
        return self._chars

    def __len__(self) -> int:
        return len(self._entries)

    def parse(self, query: str, *, max_tokens: int) -> DocumentNode:
        """The cached document of ``query``, or the query parsed and kept; a syntax error raises, uncached."""
        entry = self._entries.get(query)
        if entry is not None:
            self._entries.move_to_end(query)
            return entry.document
        document = parse(query, max_tokens=max_tokens)
        if len(query) <= self.max_chars:
            self._entries[query] = _Entry(document)
            self._chars += len(query)
            while self._chars > self.max_chars:
                evicted, _ = self._entries.popitem(last=False)
                self._chars -= len(evicted)
        return document

    def errors(self, query: str) -> list[GraphQLError] | None:
        """A copy of the errors validation found for ``query``; None when it is not cached or not validated.

        Copies, in and out: strawberry hands the list it gets to ``process_errors``, which formats it in
        place (graph/errors.py), and the next request must get the errors as validation found them.
        """
        entry = self._entries.get(query)
        if entry is None or entry.errors is None:
            return None
        return list(entry.errors)

    def put_errors(self, query: str, errors: list[GraphQLError]) -> None:
        """Keep what validation found for a cached ``query`` (one evicted meanwhile is not kept)."""
        entry = self._entries.get(query)
        if entry is not None:
            entry.errors = tuple(errors)
