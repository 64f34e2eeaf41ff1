"""Relay-style connections: ``edges { cursor node }`` and ``pageInfo``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Generic, TypeVar, cast

import strawberry

from resolvers.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page

First = Annotated[
    int | None,
    strawberry.argument(description=f"Page size: 1-{MAX_PAGE_SIZE}; {DEFAULT_PAGE_SIZE} when omitted."),
]
After = Annotated[
    str | None,
    strawberry.argument(
        description="A cursor from this list (pageInfo.endCursor, or an edge's): the page starts after it. "
        "The first page when omitted; BAD_USER_INPUT for a cursor this list could not have made."
    ),
]

Node = TypeVar("Node")
Row = TypeVar("Row")
# The list's size with its filters: a count query, run by totalCount's resolver only.
Counter = Callable[[], Awaitable[int]]


@strawberry.type(description="Where a page lies in its list, and the cursor to ask for the next one with.")
class PageInfo:
    has_next_page: bool = strawberry.field(
        description="Whether more items follow: pass endCursor as `after` to get them."
    )
    has_previous_page: bool = strawberry.field(
        description="Whether this page was asked for with `after` (lists page forward only)."
    )
    start_cursor: str | None = strawberry.field(description="The first edge's cursor; null for an empty page.")
    end_cursor: str | None = strawberry.field(
        description="The last edge's cursor, to pass as `after`; null for an empty page."
    )


@strawberry.type(description="One item of a page, with the cursor that continues the list after it.")
class Edge(Generic[Node]):
    cursor: str = strawberry.field(
        description="Opaque (at most 128 characters): pass it as `after` to list the items after this one, "
        "in the same order."
    )
    node: Node = strawberry.field(description="The item.")


@strawberry.type(description="One page of a list, fetched by keyset: a page never repeats or skips an item "
                 "because another was added meanwhile.")
class Connection(Generic[Node]):
    edges: list[Edge[Node]] = strawberry.field(description="The page's items, in the list's order.")
    page_info: PageInfo = strawberry.field(description="Whether more follow, and the cursor to get them with.")
    counter: strawberry.Private[Counter]

    @strawberry.field(
        description="How many items the whole list holds with the same filters (not just this page), counted "
        "when asked: one count query, made only when this field is selected."
    )
    async def total_count(self) -> int:
        return await self.counter()

    @classmethod
    def from_page(cls, page: Page[Row], node: Callable[[Row], Node], *, counter: Counter) -> Connection[Node]:
        """``node`` makes each item's GraphQL object; ``counter`` is called only when a client selects totalCount
        (strawberry resolves selected fields only)."""
        return cls.from_nodes(list(map(node, page.items)), page, counter=counter)

    @classmethod
    def from_nodes(cls, nodes: Sequence[Node], page: Page[Row], *, counter: Counter) -> Connection[Node]:
        """``page`` with ``nodes`` as its items' GraphQL objects (its items themselves, for a type that resolves
        straight from storage's rows), each edge made in one pass over them."""
        cursors = page.cursors
        edges: list[Edge[Node]]
        if cursors is None:
            edges = cast("list[Edge[Node]]", list(map(_EdgeWithoutCursor, nodes)))
        else:
            edges = [Edge(cursor=cursor, node=node) for node, cursor in zip(nodes, cursors, strict=True)]
        return cls(
            counter=counter,
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=page.has_previous_page,
                start_cursor=cursors[0] if cursors else None,
                end_cursor=cursors[-1] if cursors else None,
            ),
        )


class _EdgeWithoutCursor:
    """An Edge of a page whose resolver knew no cursor is selected (graph/selections.py), so none was encoded.

    graphql-core reads an object's fields by attribute, and Edge has no interface (strawberry gives it no
    ``is_type_of``), so this slotted object serves as one. Should a cursor be read after all, that is a bug in
    the selection summary: it fails loudly (an error on the field) instead of showing a wrong cursor.
    """

    __slots__ = ("node",)

    def __init__(self, node: object) -> None:
        self.node = node

    @property
    def cursor(self) -> str:
        raise RuntimeError("a cursor was read from a page built without cursors")
