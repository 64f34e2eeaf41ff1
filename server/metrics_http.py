"""The metrics over HTTP: counting requests by route, ``/metrics`` in ``serve``, and a worker's own metrics port.

``/metrics`` answers Prometheus' text format. It holds no user data (no user
ids, paths or tokens in any label: server/metrics.py), so it is public by
default, like ``/healthz``; ``METRICS_TOKEN`` makes it (and a worker's
``METRICS_PORT``) answer only requests carrying ``Authorization: Bearer
<token>``, for a deployment that exposes the port beyond its scraper.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socketserver
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, make_wsgi_app
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.metrics import Metrics

logger = logging.getLogger(__name__)


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """The standard library's WSGI server, a thread per scrape, so a slow scraper never holds the next one."""

    daemon_threads = True

# The route label of a request no route took: a 404, or one refused before routing (server/request_limits.py).
UNMATCHED = "unmatched"
UNAUTHORIZED_BODY = b"metrics need 'Authorization: Bearer <METRICS_TOKEN>'\n"


def token_accepted(authorization: str | None, token: str | None) -> bool:
    """Whether the ``Authorization`` header carries ``token`` (always, when no token is set)."""
    if token is None:
        return True
    expected = f"Bearer {token}".encode()
    return hmac.compare_digest((authorization or "").encode("utf-8", "surrogateescape"), expected)


class CountRequests:
    """Counts every HTTP request by its route's template (``/storage/v1/object/sign/{bucket}/{path:path}``) and status.

    The route comes from Starlette's router (``scope["route"]``, set on the
    scope it was handed), never the raw path, which holds object paths and
    signed tokens. Websockets are not requests: they are counted open by the
    gauge. A response that never started (the app raised) counts as 500.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: int | None = None  # None: no response started

        def send_status(message: Message) -> Awaitable[None]:  # (plain: no coroutine of its own per message)
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return send(message)

        try:
            await self.app(scope, receive, send_status)
        except asyncio.CancelledError:
            # Cut at shutdown: the client is answered 503 outside us (server/http_drain.py), not a 500.
            if status is None:
                status = 503
            raise
        finally:
            route = scope.get("route")
            answered = 500 if status is None else status
            self.metrics.request(route.path if isinstance(route, Route) else UNMATCHED, answered)


def metrics_route(metrics: Metrics, token: str | None) -> Route:
    """``GET /metrics``: the app's registry in Prometheus' text format (behind ``METRICS_TOKEN`` when set)."""

    async def scrape(request: Request) -> Response:
        if not token_accepted(request.headers.get("authorization"), token):
            return Response(UNAUTHORIZED_BODY, 401, {"WWW-Authenticate": "Bearer"}, media_type="text/plain")
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", scrape, methods=["GET", "HEAD"])


class _QuietHandler(WSGIRequestHandler):
    """wsgiref's handler without its line per request on stderr (a scrape every few seconds)."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's parameter name
        pass


StartResponse = Callable[..., object]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _guarded(app: WsgiApp, token: str | None) -> WsgiApp:
    def guarded(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not token_accepted(environ.get("HTTP_AUTHORIZATION"), token):
            start_response("401 Unauthorized", [("WWW-Authenticate", "Bearer"), ("Content-Type", "text/plain")])
            return [UNAUTHORIZED_BODY]
        return app(environ, start_response)

    return guarded


class MetricsServerError(Exception):
    """The metrics port could not be bound (taken, or not allowed); the message says which."""


class MetricsServer:
    """A ``portraits worker``'s metrics on ``METRICS_PORT``: prometheus_client's WSGI app in a thread.

    The worker has no HTTP server of its own; this one answers scrapes (any
    path, as prometheus_client's app does) from a daemon thread, off the
    event loop, with the same ``METRICS_TOKEN`` rule as ``/metrics``.
    """

    def __init__(self, metrics: Metrics, *, host: str, port: int, token: str | None) -> None:
        app = _guarded(make_wsgi_app(metrics.registry), token)
        try:
            self._server = make_server(host, port, app, _ThreadingWSGIServer, handler_class=_QuietHandler)
        except OSError as error:
            raise MetricsServerError(f"cannot serve metrics on {host}:{port}: {error}") from error
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-server", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> None:
        self._thread.start()
        logger.info("metrics on port %d", self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
