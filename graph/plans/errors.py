"""The field errors of one execution, with graphql-core's rule for nulled positions."""

from __future__ import annotations

from graphql import GraphQLError
from graphql.pyutils import Path


class FieldErrors:
    """Errors in the order they were raised; one under a position already nulled is dropped.

    The same rule as graphql-core's ``CollectedErrors`` (internal to graphql-core, so ours): an error is kept
    unless its position, or one of its ancestors, was already nulled by an earlier error; a ``None`` position is
    the whole response (``data`` null), which drops every later error.
    """

    __slots__ = ("errors", "positions")

    def __init__(self) -> None:
        self.errors: list[GraphQLError] = []
        self.positions: set[Path | None] = set()

    def add(self, error: GraphQLError, path: Path | None) -> None:
        positions = self.positions
        if positions:
            position = path
            while position is not None:
                if position in positions:
                    return
                position = position.prev
            if None in positions:
                return
        positions.add(path)
        self.errors.append(error)
