"""Forward keyset pagination over (created_at, id), newest first.

Cursors are opaque to clients (base64url of the sort key) and stable under
inserts: a page never repeats or skips a row because a new one arrived.
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
# encode_cursor's longest: base64 of a 32-character time, "|" and a 36-character UUID.
MAX_CURSOR_LENGTH = 92

T = TypeVar("T")
SortKey = tuple[datetime, UUID]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    cursors: Sequence[str]
    has_next_page: bool
    has_previous_page: bool


def page_size(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE_SIZE
    if not 1 <= first <= MAX_PAGE_SIZE:
        raise BadUserInput(f"first must be between 1 and {MAX_PAGE_SIZE}", field="first")
    return first


def encode_cursor(key: SortKey) -> str:
    created_at, row_id = key
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> SortKey | None:
    if cursor is None:
        return None
    unpadded = cursor.rstrip("=")
    if len(unpadded) > MAX_CURSOR_LENGTH:
        raise _invalid_cursor()
    try:
        raw = base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4)).decode()
        created_at, row_id = raw.split("|")
        key = (datetime.fromisoformat(created_at), UUID(row_id))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _invalid_cursor() from None
    if key[0].utcoffset() != timedelta(0) or encode_cursor(key) != unpadded:
        raise _invalid_cursor()
    return key


def _invalid_cursor() -> BadUserInput:
    return BadUserInput("after is not a valid cursor", field="after")


def make_page(rows: Sequence[T], *, size: int, after: SortKey | None, sort_key: Callable[[T], SortKey]) -> Page[T]:
    """``rows`` was fetched with ``LIMIT size + 1``: the extra row only says a next page exists."""
    items = rows[:size]
    return Page(
        items=items,
        cursors=[encode_cursor(sort_key(item)) for item in items],
        has_next_page=len(rows) > size,
        has_previous_page=after is not None,
    )
