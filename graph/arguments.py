"""Nullable arguments declared without a default: ``= OMITTED`` where the Python default would be None.

Declared ``ttlSeconds: Int`` rather than ``ttlSeconds: Int = null`` (and so
a list's ``first``, ``after`` and filters), an argument the operation leaves
out is absent from the arguments graphql-core hands the resolver, so
strawberry converts nothing for it; with ``= null`` it converts the null on
every call (``convert_argument`` twice per argument, on each of a signed
page's 100 URLs). For a client the two declarations mean the same: left out
is null. The resolver then gets strawberry's ``UNSET`` (its documented marker
of an argument not given), which ``given`` turns back into None.
"""

from __future__ import annotations

from typing import Any, TypeVar

import strawberry

T = TypeVar("T")

# The Python default of such an argument (strawberry.UNSET, typed Any so that it fits any annotation).
OMITTED: Any = strawberry.UNSET


def given(value: T | None) -> T | None:
    """The argument's value; None when the operation left it out."""
    return None if value is OMITTED else value
