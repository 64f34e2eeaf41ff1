"""What shared caches (a CDN in front of ``GET /graphql``) may keep of a GraphQL answer.

A persisted query's GET URL is the same for every client (server/persisted_queries.py), so a CDN keyed on the
URL alone would hand one user's answer to the next. Answers to a request with a token are for that caller only
(``private, no-store``); every GET answer names what shaped it besides the URL in ``Vary``: the token, and
``Accept``, which picks the media type and with it the status codes (server/media_types.py). An answer with
errors is never kept (``NO_STORE``, set by the view). A public answer without errors carries no
``Cache-Control``: how long a CDN keeps it is its operator's choice.
"""

from __future__ import annotations

PRIVATE = "private, no-store"
NO_STORE = "no-store"
# The view adds Accept to every /graphql answer, and CORS adds Origin (server/cors.py), after this.
GET_VARY = "Authorization"


def get_cache_headers(*, authorized: bool) -> dict[str, str]:
    """The caching headers of a GET answer, by whether its request carried an ``Authorization`` header."""
    headers = {"vary": GET_VARY}
    if authorized:
        headers["cache-control"] = PRIVATE
    return headers
