"""Cross-origin access for browser apps: CORS_ALLOWED_ORIGINS, checked on HTTP (CORS) and on websocket upgrades.

Browser apps on other origins call ``/graphql`` and load signed images from the
signed-object route. Starlette's ``CORSMiddleware`` answers their preflights
and adds the CORS headers to the answers of allowed origins; ``CrossOrigin``
puts it in front of those two paths only, and refuses a preflight from an
origin not on the list with a 403 whose body says so (Starlette's own is a
bare 400 "Disallowed CORS origin"). Credentials are off: clients authenticate
with a bearer token they send themselves, never a cookie, so no origin gets a
user's session by being allowed. Websocket upgrades are checked against the
same list (``websocket_origin_refusal``): browsers do not apply CORS to them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.http.websocket_origin import is_same_origin, normalize_origin

from server.request_errors import error_body

SETTING = "CORS_ALLOWED_ORIGINS"
# Alone in CORS_ALLOWED_ORIGINS: any origin (a public API; safe because credentials are off, see above).
ANY_ORIGIN = "*"
# What `make run` (PORTRAITS_ENV=development) allows when CORS_ALLOWED_ORIGINS is not set: the dev servers of
# CRA/Next.js (3000), Vite's preview (4173), Angular (4200), Vite (5173) and the common 8080, by either local name.
DEV_PORTS = (3000, 4173, 4200, 5173, 8080)
DEV_ORIGINS = tuple(f"http://{host}:{port}" for host in ("localhost", "127.0.0.1") for port in DEV_PORTS)

ALLOWED_METHODS = ("GET", "HEAD", "POST")
# What GraphQL clients send besides the CORS-safelisted ones: the token, a request id to follow in our logs,
# Apollo Client's client awareness and CSRF-prevention headers, and W3C trace context (browser OpenTelemetry).
# urql and graphql-ws's HTTP sibling send only Accept and Content-Type; graphql-ws itself uses no HTTP headers.
ALLOWED_HEADERS = (
    "authorization",
    "content-type",
    "x-request-id",
    "apollographql-client-name",
    "apollographql-client-version",
    "apollo-require-preflight",
    "x-apollo-operation-name",
    "traceparent",
    "tracestate",
)
# Readable by the page's script: the id to quote in a bug report (server/request_ids.py).
EXPOSED_HEADERS = ("X-Request-ID",)
# Chromium's cap on caching a preflight; a longer cache is not a risk: every answer is checked again.
MAX_AGE_SECONDS = 7200
FORBIDDEN_STATUS = 403
# A scheme as RFC 3986 spells it, for origins of hybrid apps (capacitor://localhost, tauri://localhost) too.
SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_origins(raw: str) -> tuple[str, ...]:
    """CORS_ALLOWED_ORIGINS's comma-separated origins, each as a browser sends it; ValueError says what is wrong.

    An origin is ``scheme://host[:port]``: no path (not even ``/``), query, fragment or user; a default port is
    dropped, as browsers drop it. ``*`` is allowed only alone; ``null`` (sandboxed frames, ``file:`` pages) never:
    any page can make itself one.
    """
    origins: list[str] = []
    for part in raw.split(","):
        entry = part.strip()
        if not entry:
            continue
        if entry == ANY_ORIGIN:
            origins.append(entry)
            continue
        origins.append(_origin(entry))
    if ANY_ORIGIN in origins and len(origins) > 1:
        raise ValueError(f"{SETTING}: '*' allows every origin and must stand alone, not beside others")
    return tuple(dict.fromkeys(origins))


def _origin(entry: str) -> str:
    if entry.lower() == "null":
        raise ValueError(f"{SETTING}: 'null' is not allowed (any sandboxed page sends it)")
    parts = urlsplit(entry)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{SETTING}: {entry!r} has an invalid port") from None
    if not SCHEME.fullmatch(scheme) or not parts.hostname or "://" not in entry:
        raise ValueError(f"{SETTING}: {entry!r} is not an origin; write scheme://host[:port], e.g. https://app.example.com")
    if parts.path or parts.query or parts.fragment or entry.endswith(("?", "#")):
        raise ValueError(f"{SETTING}: {entry!r} has a path or query; an origin is scheme://host[:port] only")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{SETTING}: {entry!r} holds a user name; an origin is scheme://host[:port] only")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6: urlsplit drops the brackets
        host = f"[{host}]"
    if ANY_ORIGIN in host:
        raise ValueError(f"{SETTING}: {entry!r}: wildcards are not supported; list each origin (or '*' alone)")
    if port is None or port == DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def cors_description(origins: tuple[str, ...]) -> str:
    """The start banner's line: which browser origins may call this server."""
    if origins == DEV_ORIGINS:
        ports = ", ".join(str(port) for port in DEV_PORTS)
        return f"dev servers' origins: http://localhost and http://127.0.0.1 on ports {ports}"
    if not origins:
        return f"this server's own origin only (set {SETTING} for browser apps on others)"
    return ", ".join(origins)


def origin_of(url: str) -> str:
    """The origin of an absolute URL (PUBLIC_URL: the server's own origin)."""
    parts = urlsplit(url)
    return _origin(f"{parts.scheme}://{parts.netloc}")


class CrossOrigin:
    """ASGI middleware: CORS for ``paths`` (exact) and ``prefixes``; every other request passes untouched.

    Outside the request limits (server/request_limits.py), so their refusals (413, 408, 415...) carry the CORS
    headers an allowed page needs to read them; inside the request ids, so preflights and their refusals carry one.
    """

    def __init__(
        self, app: ASGIApp, *, origins: Iterable[str], paths: Iterable[str], prefixes: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.paths = frozenset(paths)
        self.prefixes = tuple(prefixes)
        self.cors = CORSMiddleware(
            app,
            allow_origins=tuple(origins),
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            allow_credentials=False,
            expose_headers=EXPOSED_HEADERS,
            max_age=MAX_AGE_SECONDS,
        )

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function: a request passes to the app or to Starlette's CORS with no coroutine of ours.
        if scope["type"] != "http" or not self._covers(scope):
            return self.app(scope, receive, send)
        if scope["method"] == "OPTIONS":  # only a preflight is refused here: other requests read no header
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            preflight = "access-control-request-method" in headers
            if preflight and origin is not None and not self.cors.is_allowed_origin(origin):
                return _refusal(origin)(scope, receive, send)
        return self.cors(scope, receive, send)

    def _covers(self, scope: Scope) -> bool:
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        return path in self.paths or path.startswith(self.prefixes)


def origin_not_allowed(origin: str) -> str:
    """The refusal's message, for a preflight and a websocket alike (at most 123 bytes for a close reason)."""
    shown = origin if len(origin) <= 60 else origin[:57] + "..."
    return f"Origin {shown} is not in {SETTING}"


def _refusal(origin: str) -> Response:
    return Response(
        error_body(origin_not_allowed(origin), "FORBIDDEN"),
        status_code=FORBIDDEN_STATUS,
        media_type="application/json",
        headers={"Vary": "Origin"},
    )


def websocket_origin_refusal(scope: Scope, allowed: Iterable[str], own_origin: str) -> str | None:
    """Why a websocket upgrade's ``Origin`` is refused, or None when it may go on.

    Browsers always send ``Origin`` on a websocket and apply no CORS to it, so the server must check it. Allowed:
    no ``Origin`` (a non-browser client, which could send any), the server's own (its ``Host``, as strawberry's
    view compares them, or PUBLIC_URL's origin: GraphiQL's page), or one on CORS_ALLOWED_ORIGINS. Strawberry's
    view checks the same rule again (``allowed_origins``, server/app.py) but refuses without saying why.
    """
    headers = Headers(scope=scope)
    sent = headers.getlist("origin")
    if not sent:
        return None
    if len(sent) > 1:
        return "More than one Origin header"
    origin = normalize_origin(sent[0]) or sent[0]
    allowed_origins = tuple(allowed)
    if ANY_ORIGIN in allowed_origins or origin in allowed_origins or origin == own_origin:
        return None
    if headers.get("sec-fetch-site") == "same-origin" or is_same_origin(origin, headers.get("host")):
        return None
    return origin_not_allowed(sent[0])
