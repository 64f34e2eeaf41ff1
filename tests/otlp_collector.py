"""A fake OTLP/HTTP collector for the tests: real HTTP on 127.0.0.1, decoding what the exporter POSTs.

It accepts ``POST /v1/traces`` with a protobuf ``ExportTraceServiceRequest`` (opentelemetry-proto's public
message, the one the OTLP/HTTP exporter sends), keeps every raw body (so a test can search the bytes for a
secret) and every span flattened, and answers an empty ``ExportTraceServiceResponse``.

    with OtlpCollector() as collector:
        ...  # OTEL_EXPORTER_OTLP_ENDPOINT=collector.url
        spans = collector.wait_for(lambda spans: any(s.name == "POST /graphql" for s in spans))
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage

SERVER = SpanMessage.SPAN_KIND_SERVER
CLIENT = SpanMessage.SPAN_KIND_CLIENT
INTERNAL = SpanMessage.SPAN_KIND_INTERNAL


@dataclass(frozen=True)
class CollectedSpan:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    attributes: dict[str, Any]
    status_code: int  # Status.STATUS_CODE_*: 0 unset, 1 ok, 2 error
    resource: dict[str, Any]
    scope: str  # the instrumentation scope's name


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {item.key: _value(item.value) for item in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


class OtlpCollector:
    """A ThreadingHTTPServer on a free port; ``url`` is what OTEL_EXPORTER_OTLP_ENDPOINT takes."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.spans: list[CollectedSpan] = []
        self.requests = 0
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with collector.lock:
                    collector.requests += 1
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                collector.received(body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def received(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = {item.key: _value(item.value) for item in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        CollectedSpan(
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={item.key: _value(item.value) for item in span.attributes},
                            status_code=span.status.code,
                            resource=resource,
                            scope=scope_spans.scope.name,
                        )
                    )
        with self.lock:
            self.bodies.append(body)
            self.spans.extend(spans)

    def snapshot(self) -> list[CollectedSpan]:
        with self.lock:
            return list(self.spans)

    def wait_for(self, done: Callable[[list[CollectedSpan]], bool], timeout: float = 30) -> list[CollectedSpan]:
        """The spans received once ``done`` holds for them; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.snapshot()
            if done(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"the collector never got what was awaited; {len(spans)} span(s): {spans}")
            time.sleep(0.05)

    def __enter__(self) -> OtlpCollector:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
