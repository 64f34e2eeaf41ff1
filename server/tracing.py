"""OpenTelemetry tracing, set up once at start when an OTLP endpoint is configured (README: Tracing).

Imported only when ``settings.tracing.enabled`` (server/cli.py, server/app.py): the SDK, the exporter and
protobuf cost ~0.4 s and ~8 MB to import, and a process without an endpoint has no tracer provider, no
middleware and no instrumented asyncpg. When on:

- HTTP requests get one server span each from opentelemetry-instrumentation-asgi's middleware, named by
  their route's template (``GET /storage/v1/object/sign/{bucket}/{path}``), with the status; no spans per
  ASGI message. Query strings keep their parameter names only (signed URLs carry tokens, GET /graphql
  carries variables), and the Authorization and Cookie headers are redacted if an operator asks for headers
  (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST).
- Probes (/healthz, /livez, /readyz, /metrics) are not traced: an orchestrator's poll every few seconds
  would outnumber real traffic, and their answers say what failed.
- GraphQL websockets are not traced: they take a shortcut past the HTTP stack (server/websocket.py), and a
  span would last the socket's life.
- asyncpg statements are spans (opentelemetry-instrumentation-asyncpg: the SQL text, never parameter
  values) inside a request or a job run (pipeline/worker.py); a statement outside any trace (the
  worker's claims and polls, LISTEN health checks, the health probe's ping) is dropped by the sampler
  rather than made a trace of its own.

The standard OTEL_* variables not read by Settings (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION,
OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*, OTEL_RESOURCE_ATTRIBUTES, ...) are read by the SDK and the exporter
themselves, when ``Tracing.start`` builds them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import Span, TraceState
from opentelemetry.util.http import get_custom_headers
from opentelemetry.util.types import Attributes
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Scope

from server.settings import TracingConfig

# Probes, polled every few seconds by orchestrators and scrapers: not traced (see the module's docstring).
# The middleware matches these against the request's URL without its query string.
UNTRACED_URLS = r"^https?://[^/]*/(?:healthz|livez|readyz|metrics)$"
# Headers never written into a span, whatever OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_* ask for
# (names matched as case-insensitive regular expressions).
SANITIZED_HEADERS = ["authorization", "cookie"]
SANITIZE_FIELDS_VARIABLE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"
# Span attributes that hold the request's query string, in the old and the stable HTTP conventions
# (OTEL_SEMCONV_STABILITY_OPT_IN picks which the middleware writes).
URL_ATTRIBUTES = ("http.url", "url.full")
QUERY_ATTRIBUTE = "url.query"
# A query parameter's name is kept when it looks like one (token, query, variables); its value never is.
_PARAMETER_NAME = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,64}")
REDACTED = "REDACTED"
# Attributes by which asyncpg's instrumentation marks a statement (old and stable database conventions).
_STATEMENT_MARKS = ("db.system", "db.system.name")


class Tracing:
    """This process's tracer provider, its OTLP exporter and the asyncpg instrumentation."""

    def __init__(self, provider: TracerProvider, instrumentor: AsyncPGInstrumentor) -> None:
        self.provider = provider
        self.instrumentor = instrumentor

    @classmethod
    def start(cls, config: TracingConfig) -> Tracing:
        """Set the global tracer provider and instrument asyncpg; once per process, before any app or worker."""
        if config.traces_endpoint is None:
            raise ValueError("Tracing.start needs an OTLP endpoint (settings.tracing.enabled)")
        # The sampler OTEL_TRACES_SAMPLER(_ARG) names, as the SDK builds it (no public function returns it).
        configured = TracerProvider(shutdown_on_exit=False).sampler
        provider = TracerProvider(
            sampler=StatementsInsideTraces(configured),
            resource=Resource.create({SERVICE_NAME: config.service_name}),
            shutdown_on_exit=False,  # shut down by ``shutdown`` when the command ends, flushing the last spans
        )
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.traces_endpoint)))
        trace.set_tracer_provider(provider)
        # The SQL text only, never parameter values. (Its __init__ is not annotated.)
        instrumentor = AsyncPGInstrumentor(capture_parameters=False)  # type: ignore[no-untyped-call]
        instrumentor.instrument(tracer_provider=provider)
        return cls(provider, instrumentor)

    def shutdown(self) -> None:
        """Export the spans still queued and stop the exporter (bounded by OTEL_EXPORTER_OTLP_TIMEOUT)."""
        self.instrumentor.uninstrument()
        self.provider.shutdown()


def traced_http(app: ASGIApp, routes: Sequence[BaseRoute]) -> ASGIApp:
    """``app`` behind OpenTelemetry's ASGI middleware: one server span per request, named by its route."""

    def span_details(scope: Scope) -> tuple[str, dict[str, str]]:
        method = scope.get("method", "")
        for route in routes:
            match, _ = route.matches(scope)
            template = getattr(route, "path", None)  # Route.path: the route's template
            if match is not Match.NONE and isinstance(template, str):
                return f"{method} {template}".strip(), {"http.route": template}
        # No route: the method alone, as the HTTP conventions name such spans (a websocket has none: its type).
        return method or str(scope.get("type", "HTTP")), {}

    return OpenTelemetryMiddleware(
        app,
        excluded_urls=UNTRACED_URLS,
        default_span_details=span_details,
        server_request_hook=redact_query,
        exclude_spans=["receive", "send"],
        http_capture_headers_sanitize_fields=SANITIZED_HEADERS + get_custom_headers(SANITIZE_FIELDS_VARIABLE),
    )


def redact_query(span: Span, scope: dict[str, Any]) -> None:
    """Keep a request's query-parameter names in its span, never their values: signed URLs carry tokens."""
    if not scope.get("query_string") or not isinstance(span, ReadableSpan) or span.attributes is None:
        return
    recorded = span.attributes
    for key in URL_ATTRIBUTES:
        if isinstance(value := recorded.get(key), str):
            url, _, query = value.partition("?")
            span.set_attribute(key, f"{url}?{redacted_query(query)}")
    if isinstance(value := recorded.get(QUERY_ATTRIBUTE), str):
        span.set_attribute(QUERY_ATTRIBUTE, redacted_query(value))


def redacted_query(query: str) -> str:
    """``token=abc&x=1`` -> ``token=REDACTED&x=REDACTED``; a name that does not look like one is redacted too."""
    names = (part.partition("=")[0] for part in query.split("&") if part)
    return "&".join(f"{name if _PARAMETER_NAME.fullmatch(name) else REDACTED}={REDACTED}" for name in names)


class StatementsInsideTraces(Sampler):
    """Database statements are traced inside a request or a job run, never as traces of their own.

    A statement with no parent span (a worker's poll, a LISTEN connection's health check, the health
    probe's ping) would otherwise be a one-span trace every few seconds. Every other span is left to the
    configured sampler.
    """

    def __init__(self, configured: Sampler) -> None:
        self.configured = configured

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if not parent.is_valid and kind is SpanKind.CLIENT and attributes and any(
            mark in attributes for mark in _STATEMENT_MARKS
        ):
            return SamplingResult(Decision.DROP)
        return self.configured.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"StatementsInsideTraces{{{self.configured.get_description()}}}"
