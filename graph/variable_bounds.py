"""Variable values measured before graphql-core coerces them, item by item.

graphql-core turns every item of a list variable into its input type before
any resolver of ours can look at the list's length: about 2.4 us an item, so
a 4 MB body of ``[1,1,1,...]`` held the event loop for seconds before
``appearanceTags`` (at most 30) was refused. Every input list of the schema
is small, and a ``JSON`` scalar (``sceneBehaviorRules``) is at most 16 KiB
encoded; so the values a request carries are walked once here, stopping at
the first list longer than ``MAX_LIST_ITEMS`` or after ``MAX_VALUES``
values, whatever their nesting (an explicit stack, no recursion).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from graphql import DocumentNode, GraphQLError, OperationDefinitionNode

MAX_LIST_ITEMS = 1000
MAX_VALUES = 20_000


@dataclass(frozen=True, slots=True)
class VariableBounds:
    max_list_items: int = MAX_LIST_ITEMS
    max_values: int = MAX_VALUES


def check_variables(
    variables: Mapping[str, object] | None, document: DocumentNode, bounds: VariableBounds = VariableBounds()
) -> GraphQLError | None:
    """The first bound the variables the document declares break, as the client's error; ``None`` when they fit.

    Values the document does not declare are never coerced, so they cost nothing and are not measured.
    """
    if not variables or not any(isinstance(value, (list, dict)) for value in variables.values()):
        return None  # scalars only (a by-id query's one id, say): nothing that could be too big
    declared = _declared(document)
    pending: list[tuple[_Trail, object]] = [
        ((None, name), value) for name, value in variables.items() if name in declared
    ]
    seen = len(pending)
    while pending:
        trail, value = pending.pop()
        if not isinstance(value, list | dict):
            continue
        if isinstance(value, list) and len(value) > bounds.max_list_items:
            return _too_big(
                f"{_describe(trail)} holds a list of {len(value)} items; at most {bounds.max_list_items} are allowed.",
                "listItems", bounds.max_list_items, len(value), trail,
            )
        seen += len(value)  # measured before a single item is read
        if seen > bounds.max_values:
            return _too_big(
                f"The variables hold more than {bounds.max_values} values.", "values", bounds.max_values, seen, trail
            )
        items = value.items() if isinstance(value, dict) else enumerate(value)
        pending.extend(((trail, key), item) for key, item in items)
    return None


def _declared(document: DocumentNode) -> set[str]:
    """The variables any operation of the document declares (at most a few hundred: the token limit)."""
    return {
        definition.variable.name.value
        for operation in document.definitions
        if isinstance(operation, OperationDefinitionNode)
        for definition in operation.variable_definitions or ()
    }


# Where a value sits, as a linked list (parent, key): made in O(1) per value, read only for an error.
_Trail = tuple["_Trail | None", str | int]


def _path(trail: _Trail) -> list[str | int]:
    keys: list[str | int] = []
    link: _Trail | None = trail
    while link is not None:
        link, key = link
        keys.append(key)
    return keys[::-1]


def _describe(trail: _Trail) -> str:
    variable, *rest = _path(trail)
    return f"Variable '${variable}'" + "".join(f"[{key!r}]" if isinstance(key, int) else f".{key}" for key in rest)


def _too_big(message: str, measure: str, limit: int, value: int, trail: _Trail) -> GraphQLError:
    """The error, naming the variable and, as other input errors do, the nearest input field (``field``)."""
    path = _path(trail)
    field = next((key for key in reversed(path) if isinstance(key, str)), path[0])
    return GraphQLError(
        message,
        extensions={
            "code": "BAD_USER_INPUT", "field": field, "measure": measure, "limit": limit, "value": value,
            "variable": path[0],
        },
    )
