"""Input checks shared by every resolver; pure functions, unit-tested.

They exist because PostgreSQL refuses some strings Python accepts (NUL
characters, lone surrogates, NaN in jsonb): checked here they become a
``BAD_USER_INPUT`` error instead of a failed statement.

Every check bounds its input by length before it looks at the items or
characters, and looks at each one once: a client controls the size of what
it sends, so no check may cost more than the input's length, and a long
input costs only the comparison that refuses it.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Sequence
from typing import Any, Literal, overload
from urllib.parse import unquote, urlsplit

import orjson

from resolvers.errors import BadUserInput


@overload
def clean_text(value: str, *, field: str, max_length: int, required: Literal[True]) -> str: ...


@overload
def clean_text(value: str, *, field: str, max_length: int, required: Literal[False]) -> str | None: ...


def clean_text(value: str, *, field: str, max_length: int, required: bool) -> str | None:
    """Trimmed text within bounds; blank optional text becomes ``None``.

    The length is checked before the characters are: trimming is a copy, and a
    text over its bound is refused without being scanned.
    """
    value = value.strip()
    if len(value) > max_length:
        raise BadUserInput(f"{field} must be at most {max_length} characters", field=field)
    check_storable(value, field=field)
    if not value:
        if required:
            raise BadUserInput(f"{field} must not be blank", field=field)
        return None
    return value


def clean_tags(values: Sequence[str], *, field: str, max_count: int, max_length: int) -> list[str]:
    """Trimmed, non-blank, de-duplicated tags, in the order given.

    More than ``max_count`` tags given (duplicates included) is refused before
    any tag is read; duplicates are dropped through a dict, so the whole check
    is linear in the input.
    """
    if len(values) > max_count:
        raise BadUserInput(f"{field} takes at most {max_count} tags", field=field)
    tags: dict[str, None] = {}
    for value in values:
        tags[clean_text(value, field=field, max_length=max_length, required=True)] = None
    return list(tags)


def clean_json_object(value: Any, *, field: str, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """A JSON object that jsonb will store as given.

    Its encoded size is measured first (orjson, in C, which also refuses lone
    surrogates, integers past 64 bits and nesting past its own recursion limit);
    only an object within ``max_bytes`` is walked, without recursion.
    """
    if not isinstance(value, dict):
        raise BadUserInput(f"{field} must be a JSON object", field=field)
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError as error:
        raise BadUserInput(f"{field} is not storable JSON: {_encode_problem(error, max_depth)}", field=field) from None
    if len(encoded) > max_bytes:
        raise BadUserInput(f"{field} must be at most {max_bytes} bytes of JSON", field=field)
    _check_json(value, field=field, max_depth=max_depth)
    return value


def clean_external_url(value: str, *, field: str, max_length: int = 2048) -> str:
    """An http(s) URL to an image hosted elsewhere; signed URLs expire, so they are refused."""
    value = value.strip()
    if len(value) > max_length:
        raise BadUserInput(f"{field} must be at most {max_length} characters", field=field)
    check_storable(value, field=field)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
        raise BadUserInput(f"{field} must be an http(s) URL", field=field)
    if looks_signed(value):
        raise BadUserInput(
            f"{field} looks like a signed URL, which expires; store the storage path or a permanent URL",
            field=field,
        )
    return value


# A URL still changing after this many rounds of percent-decoding hides something: refused as signed.
MAX_DECODE_ROUNDS = 4
_SLASHES = re.compile(r"/(?:\.?/)+")


def looks_signed(url: str) -> bool:
    """Supabase (``/object/sign/...?token=``) and S3 (``X-Amz-Signature``) signed URLs.

    Compared after percent-decoding until nothing changes (``%73ign``,
    ``%2573ign``), in lower case, with backslashes read as slashes and ``//``,
    ``/./`` and ``/../`` resolved, as servers and browsers read them.
    """
    decoded = url
    for _ in range(MAX_DECODE_ROUNDS):
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    else:
        if unquote(decoded) != decoded:
            return True
    text = decoded.replace("\\", "/").lower()
    if "x-amz-signature" in text:
        return True
    try:
        path = urlsplit(text).path
    except ValueError:  # a decoded "[" that is no IPv6 host: the text is all there is
        path = text
    return "/object/sign/" in _SLASHES.sub("/", text) or "/object/sign/" in posixpath.normpath(path) + "/"


def check_storable(value: str, *, field: str) -> None:
    """PostgreSQL text holds neither NUL characters nor lone surrogates."""
    if "\x00" in value:
        raise BadUserInput(f"{field} must not contain NUL characters", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadUserInput(f"{field} must be valid Unicode text", field=field) from None


def _check_json(value: Any, *, field: str, max_depth: int) -> None:
    """Depth, NUL characters and NaN, each value visited once, with a stack of its own rather than recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise BadUserInput(f"{field} nests deeper than {max_depth} levels", field=field)
        if isinstance(item, dict):
            for key, child in item.items():
                check_storable(str(key), field=field)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            check_storable(item, field=field)
        elif isinstance(item, float) and not math.isfinite(item):
            raise BadUserInput(f"{field} must not contain NaN or Infinity", field=field)
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > 2**63 - 1:
            raise BadUserInput(f"{field} has an integer out of range", field=field)


def _encode_problem(error: orjson.JSONEncodeError, max_depth: int) -> str:
    """orjson's reason in the client's terms; its messages name no internals."""
    reason = str(error)
    if "recursion" in reason.lower():
        return f"it nests deeper than {max_depth} levels"
    if "integer" in reason.lower():
        return "it has an integer out of range"
    if "utf-8" in reason.lower() or "surrogate" in reason.lower():
        return "it must be valid Unicode text"
    return reason
