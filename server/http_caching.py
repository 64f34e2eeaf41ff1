"""What shared caches (a CDN in front of ``GET /graphql``) may keep of a GraphQL answer.

A persisted query's GET URL is the same for every client (server/persisted_queries.py), so a CDN keyed on the
URL alone would hand one user's answer to the next. Answers to a request with a token (a user's, or an anonymous
one: the cache cannot tell them apart) are for that caller only (``private, no-store``); every GET answer names
what shaped it besides the URL in ``Vary``: the token, and ``Accept``, which picks the media type and with it the
status codes (server/media_types.py); CORS adds ``Origin`` (server/cors.py). An answer with errors is never kept
(``NO_STORE``, set by the view over a public answer's header). A public answer without errors, which only a query
can be (strawberry refuses a mutation over GET before it runs), says ``public, max-age=N`` with N from
PUBLIC_GET_MAX_AGE_SECONDS (``no-cache`` at 0: kept, but asked again each time), rather than leaving it to the
CDN's own default, a day for some.
"""

from __future__ import annotations

PRIVATE = "private, no-store"
NO_STORE = "no-store"
NO_CACHE = "no-cache"
# The view adds Accept to every /graphql answer, and CORS adds Origin (server/cors.py), after this.
GET_VARY = "Authorization"


def public_cache_control(max_age_seconds: int) -> str:
    """What a public GET answer says: kept ``max_age_seconds`` by any cache, or revalidated each time at 0."""
    return f"public, max-age={max_age_seconds}" if max_age_seconds > 0 else NO_CACHE


def get_cache_headers(*, authorized: bool, public_max_age_seconds: int) -> dict[str, str]:
    """The caching headers of a GET answer, by whether its request carried an ``Authorization`` header; the view
    replaces a public answer's ``Cache-Control`` when the answer has errors (``with_errors``)."""
    cache_control = PRIVATE if authorized else public_cache_control(public_max_age_seconds)
    return {"vary": GET_VARY, "cache-control": cache_control}


def with_errors(cache_control: str | None) -> str:
    """What an answer with errors says instead of ``cache_control``: a private one stays as it is (no shared cache
    keeps it), anything else ``no-store`` (a refusal or a passing failure is nobody's to keep)."""
    directives = {part.strip().lower() for part in (cache_control or "").split(",")}
    return cache_control if cache_control is not None and "private" in directives else NO_STORE
