"""What a client selected under a connection field, so resolvers fetch and build only that.

A list resolver asks ``connection_selection(info)`` which node fields are
selected (through aliases, named and inline fragments, ``@skip``/``@include``),
whether any cursor is (``edges.cursor``, ``pageInfo.startCursor``/``endCursor``)
and whether ``totalCount`` is. The answer comes from strawberry's public
``info.selected_fields`` and is memoised per operation and field position, so a
cached document pays the walk once: the key holds the operation node itself
(compared by identity; graphql-core AST nodes are not weak-referenceable, and
the strong reference keeps ``id()`` from being reused while the entry lives)
and the field's response path with each level's parent type (which, for one
operation, fixes the field nodes graphql-core merged). An answer that depended on
``@skip``/``@include`` (whose condition may be a variable) is never memoised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from graphql import OperationDefinitionNode
from graphql.pyutils import Path
from strawberry.types import Info
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

# Distinct (operation, field position) pairs remembered; the memo is emptied when full (documents are few).
MEMO_SIZE = 1024

CURSOR_FIELDS = frozenset({"startCursor", "endCursor"})


@dataclass(frozen=True, slots=True)
class ConnectionSelection:
    """A connection field's selection, by GraphQL field name (aliases resolved, ``__typename`` left out)."""

    node_fields: frozenset[str]
    edge_cursor: bool
    page_info_fields: frozenset[str]
    total_count: bool

    @property
    def needs_cursors(self) -> bool:
        """Whether any cursor is shown: hasNextPage and hasPreviousPage need none."""
        return self.edge_cursor or not self.page_info_fields.isdisjoint(CURSOR_FIELDS)


_PathKey = tuple[object, ...]
_Summary = TypeVar("_Summary")
# One memo per kind of answer: an entry is the operation (kept, see the module docstring) and its answer.
_Memo = dict[tuple[int, _PathKey], tuple[OperationDefinitionNode, _Summary]]
_memo: _Memo[ConnectionSelection] = {}
_object_memo: _Memo[frozenset[str]] = {}


def _memoised(
    memo: _Memo[_Summary],
    info: Info[Any, Any],
    summarise: Callable[[Iterable[Selection]], tuple[_Summary, bool]],
) -> _Summary:
    """``summarise(info.selected_fields)``'s answer, from ``memo`` when this operation's field asked before; an
    answer that a directive decided (``summarise`` says so) is not kept. The memo is emptied when full."""
    operation = info.operation
    key = (id(operation), _path_key(info))
    hit = memo.get(key)
    if hit is not None and hit[0] is operation:
        return hit[1]
    summary, conditional = summarise(info.selected_fields)
    if not conditional:
        if len(memo) >= MEMO_SIZE:
            memo.clear()
        memo[key] = (operation, summary)
    return summary


def connection_selection(info: Info[Any, Any]) -> ConnectionSelection:
    """The selection under the field ``info`` resolves; memoised unless a directive decided part of it."""
    return _memoised(_memo, info, summarise)


def object_selection(info: Info[Any, Any]) -> frozenset[str]:
    """The fields selected on the object the field ``info`` resolves returns, by GraphQL name (aliases resolved,
    fragments flattened, ``__typename`` left out); memoised as ``connection_selection`` is."""
    return _memoised(_object_memo, info, summarise_object)


def summarise_object(fields: Iterable[Selection]) -> tuple[frozenset[str], bool]:
    """The names of the fields selected under an object field's selections (one per merged field node), and
    whether a directive decided any of them."""
    conditional = [False]
    names = {
        field.name for selected in _fields(fields, conditional) for field in _fields(selected.selections, conditional)
    }
    names.discard("__typename")
    return frozenset(names), conditional[0]


def _path_key(info: Info[Any, Any]) -> _PathKey:
    """The response path without list indices, each key with its parent type's name."""
    parts: list[object] = []
    path: Path | None = info.path
    while path is not None:
        if isinstance(path.key, str):
            parts.append(path.key)
            parts.append(path.typename)
        path = path.prev
    return tuple(parts)


def summarise(fields: Iterable[Selection]) -> tuple[ConnectionSelection, bool]:
    """The summary of a connection field's selections (one per merged field node), and whether a directive
    decided any part of it (then it holds only for this request's variables)."""
    conditional = [False]
    node_fields: set[str] = set()
    page_info: set[str] = set()
    edge_cursor = total_count = False
    for connection in _fields(fields, conditional):
        for field in _fields(connection.selections, conditional):
            if field.name == "edges":
                for edge_field in _fields(field.selections, conditional):
                    if edge_field.name == "cursor":
                        edge_cursor = True
                    elif edge_field.name == "node":
                        node_fields.update(f.name for f in _fields(edge_field.selections, conditional))
            elif field.name == "pageInfo":
                page_info.update(f.name for f in _fields(field.selections, conditional))
            elif field.name == "totalCount":
                total_count = True
    node_fields.discard("__typename")
    page_info.discard("__typename")
    summary = ConnectionSelection(
        node_fields=frozenset(node_fields),
        edge_cursor=edge_cursor,
        page_info_fields=frozenset(page_info),
        total_count=total_count,
    )
    return summary, conditional[0]


def _fields(selections: Iterable[Selection], conditional: list[bool]) -> Iterable[SelectedField]:
    """The fields of a selection set, fragments flattened, those ``@skip``/``@include`` leave out dropped.

    Type conditions are not checked: every list's node is one object type, and validation only lets a
    fragment apply to a type it can match, so each fragment here applies.
    """
    for selection in selections:
        if selection.directives and not _included(selection.directives, conditional):
            continue
        if isinstance(selection, SelectedField):
            yield selection
        elif isinstance(selection, FragmentSpread | InlineFragment):
            yield from _fields(selection.selections, conditional)


def _included(directives: Mapping[str, Mapping[str, Any]], conditional: list[bool]) -> bool:
    skip = directives.get("skip")
    include = directives.get("include")
    if skip is None and include is None:
        return True
    conditional[0] = True
    if skip is not None and skip.get("if") is True:
        return False
    return include is None or include.get("if") is True
