"""The media type of a GraphQL answer, chosen from the request's ``Accept`` header (GraphQL-over-HTTP, "Body").

Two are served. ``application/graphql-response+json`` tells a client the
status code is the server's own: a request error (a document that does not
parse or validate, variables that do not coerce, no operation to run) is a
4xx and its body has no ``data`` entry. ``application/json`` is the legacy
type: every well-formed request is answered 200, as before.

The choice, by the spec's rules:
- the acceptable type of highest ``q`` wins; ``q=0`` refuses a type;
- at the same ``q``, a type the header names beats one a wildcard admits, and
  of two named alike, ``application/graphql-response+json`` (what Apollo
  Client, urql and graphql-http's client send);
- a wildcard alone (``*/*``, ``application/*``: curl, browsers' fetch,
  httpx, requests) gets ``application/json``, so legacy clients keep their
  200s (the graphql-http audit's SHOULD, and its reference handler's choice);
- no ``Accept`` header at all gets ``application/graphql-response+json``, as
  the spec's legacy watershed says from 2025-01-01 on;
- a header that admits neither gets ``None``: the view answers 406.

Written here rather than taken from a library: python-mimeparse's
``best_match`` breaks ties by list order alone (no typed API either), and
werkzeug's ``MIMEAccept`` would make a web framework a dependency for thirty
lines; neither has the wildcard rule above.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"
# Sent with 406, in the Accept header of the answer: what the client could ask for.
SERVED = f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8, {JSON}; charset=utf-8"
# The header values longer than this are not parsed (they cannot name more than the two types usefully): the
# RequestLimits and header caps bound it already; this bounds the work of a pathological one further.
MAX_RANGES = 64
# A client sends the same Accept on every request: the choice for the most recent values of up to this many
# characters is kept (at most CHOICES_KEPT of them, the least recently used dropped), the parse costing ~4 us.
CACHED_ACCEPT_CHARS = 256
CHOICES_KEPT = 256


class _Match(NamedTuple):
    """How well one media range admits a type: its ``q``, then how specific it is (2 named, 1 ``type/*``, 0
    ``*/*``)."""

    quality: float
    specificity: int


def response_media_type(accept: str | None) -> str | None:
    """``GRAPHQL_RESPONSE_JSON`` or ``JSON`` for an ``Accept`` header value; ``None`` when it admits neither."""
    if accept is not None and len(accept) <= CACHED_ACCEPT_CHARS:
        return _kept_choice(accept)
    return _choice(accept)


@lru_cache(maxsize=CHOICES_KEPT)
def _kept_choice(accept: str) -> str | None:
    return _choice(accept)


def _choice(accept: str | None) -> str | None:
    if accept is None or not accept.strip():
        return GRAPHQL_RESPONSE_JSON
    ranges = [_media_range(part) for part in accept.split(",", MAX_RANGES)[:MAX_RANGES] if part.strip()]
    graphql = _best(GRAPHQL_RESPONSE_JSON, ranges)
    json = _best(JSON, ranges)
    if graphql is None and json is None:
        return None
    if json is None:
        return GRAPHQL_RESPONSE_JSON
    if graphql is None:
        return JSON
    if graphql.quality != json.quality:
        return GRAPHQL_RESPONSE_JSON if graphql.quality > json.quality else JSON
    if graphql.specificity != json.specificity:
        return GRAPHQL_RESPONSE_JSON if graphql.specificity > json.specificity else JSON
    return GRAPHQL_RESPONSE_JSON if graphql.specificity == 2 else JSON


def _media_range(text: str) -> tuple[str, str, float, str | None]:
    """``type/subtype;q=..;charset=..`` as (type, subtype, q, charset), lowercased; a bad ``q`` reads as 0."""
    name, *params = text.split(";")
    kind, _, subtype = name.strip().lower().partition("/")
    quality, charset = 1.0, None
    for param in params:
        key, _, value = param.partition("=")
        key, value = key.strip().lower(), value.strip().strip('"').lower()
        if key == "q":
            try:
                quality = float(value)
            except ValueError:
                quality = 0.0
            if not 0.0 <= quality <= 1.0:  # nan fails both comparisons
                quality = 0.0
        elif key == "charset":
            charset = value
    return kind, subtype.strip(), quality, charset


def _best(media_type: str, ranges: list[tuple[str, str, float, str | None]]) -> _Match | None:
    """The most specific range admitting ``media_type`` (UTF-8 only), if its ``q`` is above 0."""
    kind, subtype = media_type.split("/")
    best: _Match | None = None
    for range_kind, range_subtype, quality, charset in ranges:
        if charset is not None and charset not in ("utf-8", "utf8"):
            continue
        if (range_kind, range_subtype) == (kind, subtype):
            specificity = 2
        elif (range_kind, range_subtype) == (kind, "*"):
            specificity = 1
        elif (range_kind, range_subtype) == ("*", "*"):
            specificity = 0
        else:
            continue
        if best is None or specificity > best.specificity:
            best = _Match(quality, specificity)
    return best if best is not None and best.quality > 0 else None
