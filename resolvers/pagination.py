"""Forward keyset pagination over (a time, id): (created_at, id) newest first, or another order a list offers.

Cursors are opaque to clients (base64url of the sort key) and stable under
inserts: a page never repeats or skips a row because a new one arrived.
A list in another order than newest first (characters' orderBy) tags its
cursors with the order's name, so a cursor is only ever read in the order
that made it: one from another order is BAD_USER_INPUT, not a wrong page.
Only a cursor this module could have made is accepted: a UTC time and a
UUID, encoded exactly as ``encode_cursor`` does. Anything else (a time at an
offset that leaves Python's years 1-9999 in UTC, a UUID in another spelling,
other base64) is BAD_USER_INPUT before it reaches the database.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar
from uuid import UUID

from resolvers.errors import BadUserInput

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# encode_cursor's longest: base64 of a 15-character order tag, "|", a 32-character time, "|" and a 36-character
# UUID (85 bytes). Order tags are at most MAX_ORDER_TAG_LENGTH characters.
MAX_ORDER_TAG_LENGTH = 15
MAX_CURSOR_LENGTH = 116

T = TypeVar("T")
SortKey = tuple[datetime, UUID]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    # None when the caller said no cursor is shown (make_page's ``with_cursors``).
    cursors: Sequence[str] | None
    has_next_page: bool
    has_previous_page: bool


def page_size(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE_SIZE
    if not 1 <= first <= MAX_PAGE_SIZE:
        raise BadUserInput(f"first must be between 1 and {MAX_PAGE_SIZE}", field="first")
    return first


def encode_cursor(key: SortKey, order: str | None = None) -> str:
    """``order`` tags the cursor of a list in another order than newest first (None: untagged)."""
    time, row_id = key
    if order is not None and not (order.isidentifier() and len(order) <= MAX_ORDER_TAG_LENGTH):
        raise ValueError(f"not an order tag: {order!r}")
    tag = "" if order is None else f"{order}|"
    raw = f"{tag}{time.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, order: str | None = None) -> SortKey | None:
    """The sort key of a cursor ``encode_cursor(key, order)`` made; one made for another order is refused."""
    if cursor is None:
        return None
    unpadded = cursor.rstrip("=")
    if len(unpadded) > MAX_CURSOR_LENGTH:
        raise _invalid_cursor()
    try:
        raw = base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4)).decode()
        *tag, time, row_id = raw.split("|")
        key = (datetime.fromisoformat(time), UUID(row_id))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _invalid_cursor() from None
    made_for = tag[0] if len(tag) == 1 and tag[0].isidentifier() and len(tag[0]) <= MAX_ORDER_TAG_LENGTH else None
    if len(tag) > 1 or (tag and made_for is None):
        raise _invalid_cursor()
    if key[0].utcoffset() != timedelta(0) or encode_cursor(key, made_for) != unpadded:
        raise _invalid_cursor()
    if made_for != order:
        raise BadUserInput(
            "after is a cursor from this list in another order: page with the orderBy that made it, "
            "or start again without after",
            field="after",
        )
    return key


def _invalid_cursor() -> BadUserInput:
    return BadUserInput("after is not a valid cursor", field="after")


def make_page(
    rows: Sequence[T],
    *,
    size: int,
    after: SortKey | None,
    sort_key: Callable[[T], SortKey],
    order: str | None = None,
    with_cursors: bool = True,
) -> Page[T]:
    """``rows`` was fetched with ``LIMIT size + 1``: the extra row only says a next page exists.

    ``order`` tags the cursors as ``encode_cursor`` does. Without ``with_cursors`` (no cursor selected) none is
    encoded: a cursor costs a few microseconds, a hundred of them a page.
    """
    items = rows[:size]
    return Page(
        items=items,
        cursors=[encode_cursor(sort_key(item), order) for item in items] if with_cursors else None,
        has_next_page=len(rows) > size,
        has_previous_page=after is not None,
    )
