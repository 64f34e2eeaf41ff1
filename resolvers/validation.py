"""Input checks shared by every resolver; pure functions, unit-tested.

They exist because PostgreSQL refuses some strings Python accepts (NUL
characters, lone surrogates, NaN in jsonb): checked here they become a
``BAD_USER_INPUT`` error instead of a failed statement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, overload
from urllib.parse import urlsplit

import orjson

from resolvers.errors import BadUserInput


@overload
def clean_text(value: str, *, field: str, max_length: int, required: Literal[True]) -> str: ...


@overload
def clean_text(value: str, *, field: str, max_length: int, required: Literal[False]) -> str | None: ...


def clean_text(value: str, *, field: str, max_length: int, required: bool) -> str | None:
    """Trimmed text within bounds; blank optional text becomes ``None``."""
    check_storable(value, field=field)
    value = value.strip()
    if not value:
        if required:
            raise BadUserInput(f"{field} must not be blank", field=field)
        return None
    if len(value) > max_length:
        raise BadUserInput(f"{field} must be at most {max_length} characters", field=field)
    return value


def clean_tags(values: Sequence[str], *, field: str, max_count: int, max_length: int) -> list[str]:
    """Trimmed, non-blank, de-duplicated tags, in the order given."""
    tags: list[str] = []
    for value in values:
        tag = clean_text(value, field=field, max_length=max_length, required=True)
        if tag not in tags:
            tags.append(tag)
    if len(tags) > max_count:
        raise BadUserInput(f"{field} takes at most {max_count} tags", field=field)
    return tags


def clean_json_object(value: Any, *, field: str, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """A JSON object that jsonb will store as given."""
    if not isinstance(value, dict):
        raise BadUserInput(f"{field} must be a JSON object", field=field)
    _check_json(value, field=field, depth=1, max_depth=max_depth)
    if len(orjson.dumps(value)) > max_bytes:
        raise BadUserInput(f"{field} must be at most {max_bytes} bytes of JSON", field=field)
    return value


def clean_external_url(value: str, *, field: str, max_length: int = 2048) -> str:
    """An http(s) URL to an image hosted elsewhere; signed URLs expire, so they are refused."""
    check_storable(value, field=field)
    value = value.strip()
    if len(value) > max_length:
        raise BadUserInput(f"{field} must be at most {max_length} characters", field=field)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
        raise BadUserInput(f"{field} must be an http(s) URL", field=field)
    if looks_signed(value):
        raise BadUserInput(
            f"{field} looks like a signed URL, which expires; store the storage path or a permanent URL",
            field=field,
        )
    return value


def looks_signed(url: str) -> bool:
    """Supabase (``/object/sign/...?token=``) and S3 (``X-Amz-Signature``) signed URLs."""
    lowered = url.lower()
    return "/storage/v1/object/sign/" in lowered or "x-amz-signature=" in lowered


def check_storable(value: str, *, field: str) -> None:
    """PostgreSQL text holds neither NUL characters nor lone surrogates."""
    if "\x00" in value:
        raise BadUserInput(f"{field} must not contain NUL characters", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadUserInput(f"{field} must be valid Unicode text", field=field) from None


def _check_json(value: Any, *, field: str, depth: int, max_depth: int) -> None:
    if depth > max_depth:
        raise BadUserInput(f"{field} nests deeper than {max_depth} levels", field=field)
    if isinstance(value, dict):
        for key, item in value.items():
            check_storable(str(key), field=field)
            _check_json(item, field=field, depth=depth + 1, max_depth=max_depth)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, field=field, depth=depth + 1, max_depth=max_depth)
    elif isinstance(value, str):
        check_storable(value, field=field)
    elif isinstance(value, float) and not math.isfinite(value):
        raise BadUserInput(f"{field} must not contain NaN or Infinity", field=field)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63 - 1:
        raise BadUserInput(f"{field} has an integer out of range", field=field)
