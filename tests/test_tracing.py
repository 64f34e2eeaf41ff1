"""OpenTelemetry tracing: real `portraits serve` / `portraits worker` processes exporting to a fake OTLP collector.

The collector (tests/otlp_collector.py) is real HTTP and decodes the exporter's protobuf; the processes are
the real commands. Tracing is on only with OTEL_EXPORTER_OTLP_ENDPOINT; off, nothing reaches a collector and
the app has no OpenTelemetry middleware.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

from server.app import create_app
from server.auth import issue_token
from server.settings import Settings, TracingConfig
from server.tracing import redacted_query
from tests.otlp_collector import CLIENT, INTERNAL, SERVER, CollectedSpan, OtlpCollector
from tests.server_process import READY, Server
from tests.support import TEST_JWT_SECRET

# The signed-object route as Starlette writes its template (server/app.py).
SIGN_ROUTE_TEMPLATE = "/storage/v1/object/sign/{bucket}/{path:path}"
# Text that is only ever a statement's parameter or a prompt's: it must reach no span.
CHARACTER_NAME = "Ottilie Varga-Nakamura"
# The SDK's batch processor (OTEL_BSP_*, read by the SDK itself) holding every span until the process stops:
# what reaches the collector then was flushed at shutdown.
HELD_BATCHES = {
    "OTEL_BSP_SCHEDULE_DELAY": "600000",
    "OTEL_BSP_MAX_QUEUE_SIZE": "100000",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100000",
}


@pytest.fixture
def collector() -> Iterator[OtlpCollector]:
    with OtlpCollector() as running:
        yield running


@pytest.fixture(autouse=True)
def no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The processes inherit the tests' environment: only what a test sets may switch tracing on."""
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)


def graphql(server: Server, token: str, query: str) -> dict:
    response = httpx.post(f"{server.url}/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    body: dict = response.json()
    assert "errors" not in body, body
    return body


def generate_portrait(server: Server, token: str) -> tuple[str, str]:
    """A character with a completed portrait, through the API; its job id and its image's signed URL."""
    created = graphql(
        server, token, f'mutation {{ createCharacter(input: {{name: "{CHARACTER_NAME}", description: "d"}}) {{ id }} }}'
    )
    character_id = created["data"]["createCharacter"]["id"]
    started = graphql(
        server, token, f'mutation {{ generateCharacterPortrait(input: {{characterId: "{character_id}"}}) {{ id }} }}'
    )
    job_id = started["data"]["generateCharacterPortrait"]["id"]
    deadline = time.monotonic() + 60
    while True:
        job = graphql(server, token, f'{{ job(id: "{job_id}") {{ status character {{ signedImageUrl {{ url }} }} }} }}')
        if job["data"]["job"]["status"] == "COMPLETED":
            return job_id, job["data"]["job"]["character"]["signedImageUrl"]["url"]
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def children(spans: list[CollectedSpan], parent: CollectedSpan) -> list[CollectedSpan]:
    return [span for span in spans if span.parent_span_id == parent.span_id and span.trace_id == parent.trace_id]


def statements(spans: list[CollectedSpan]) -> list[CollectedSpan]:
    return [span for span in spans if span.kind == CLIENT and span.attributes.get("db.system") == "postgresql"]


def test_serve_exports_request_statement_and_job_spans_flushed_at_shutdown(
    tmp_path: Path, servers: list[Server], database_url: str, collector: OtlpCollector
) -> None:
    # given `serve` with an OTLP endpoint, and a batch delay longer than the test: spans leave only when it stops
    server = Server(
        tmp_path,
        DATABASE_URL=database_url,
        JWT_SECRET=TEST_JWT_SECRET,
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
        **HELD_BATCHES,
    )
    servers.append(server)
    server.wait_for(READY)
    assert f"Tracing    OTLP/HTTP to {collector.url}/v1/traces as 'portraits'" in server.rest_of_output()
    token = issue_token(TEST_JWT_SECRET, uuid.uuid4(), ttl=timedelta(minutes=5))

    # when a user queries, generates a portrait and downloads it by its signed URL (once tampered with),
    # and a load balancer probes the health check
    graphql(server, token, "{ characters(first: 5) { edges { node { id name } } } }")
    job_id, signed_url = generate_portrait(server, token)
    assert httpx.get(signed_url).status_code == 200
    object_token = parse_qs(urlsplit(signed_url).query)["token"][0]
    tampered = object_token[:-4] + ("AAAA" if not object_token.endswith("AAAA") else "BBBB")
    assert httpx.get(signed_url.replace(object_token, tampered)).status_code == 400
    for _ in range(3):
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert collector.requests == 0  # all still batched in the process
    assert server.stop(signal.SIGTERM) == 0

    # then stopping flushed every span to the collector, as service "portraits"
    spans = collector.snapshot()
    assert spans and all(span.resource.get("service.name") == "portraits" for span in spans)

    # a GraphQL request is a server span named by its route, with its status, its statements its children
    requests = [span for span in spans if span.kind == SERVER and span.name == "POST /graphql"]
    assert len(requests) >= 4
    for request in requests:
        assert request.attributes["http.route"] == "/graphql"
        assert request.attributes["http.status_code"] == 200
    query = next(
        request for request in requests
        if any("FROM characters" in str(child.attributes.get("db.statement")) for child in children(spans, request))
    )
    assert all(child.kind == CLIENT for child in children(spans, query))

    # statements carry their SQL, never parameter values; the character's name (a parameter and part of the
    # job's prompt) is nowhere in what was exported
    assert statements(spans)
    assert all("db.statement.parameters" not in span.attributes for span in statements(spans))
    assert all(CHARACTER_NAME.encode() not in body for body in collector.bodies)
    assert all(b"Bearer" not in body and token.encode() not in body for body in collector.bodies)

    # a job run is one span with its job, model, provider and outcome, and its statements below it; on a loaded
    # machine an attempt can end early (a lease that ran out) and a second one complete the job: one span each,
    # only the last completed
    runs = [span for span in spans if span.name == "run job"]
    completed = [span for span in runs if span.attributes.get("portraits.job.outcome") == "completed"]
    assert len(completed) == 1, [span.attributes for span in runs]
    (run,) = completed
    assert all(span.attributes.get("portraits.job.outcome") for span in runs), [span.attributes for span in runs]
    assert run.attributes["portraits.job.attempt"] == len(runs), [span.attributes for span in runs]
    assert run.kind == INTERNAL and run.parent_span_id == ""
    assert run.attributes["portraits.job.id"] == job_id
    assert run.attributes["portraits.job.provider"] == "local"
    assert run.attributes["portraits.job.model"]
    assert run.attributes["portraits.job.outcome"] == "completed"
    assert not any("prompt" in key for key in run.attributes)
    assert statements(children(spans, run))

    # a signed-object download is named by its route's template; its token is nowhere in what was exported
    downloads = [span for span in spans if span.kind == SERVER and span.name == f"GET {SIGN_ROUTE_TEMPLATE}"]
    assert sorted(span.attributes["http.status_code"] for span in downloads) == [200, 400]
    assert all(span.attributes["http.url"].endswith("?token=REDACTED") for span in downloads)
    signature = object_token.rsplit(".", 1)[1]
    assert all(signature.encode() not in body and object_token.encode() not in body for body in collector.bodies)

    # probes are not traced, nor is any statement outside a request or a job run (polls, LISTEN checks, pings)
    assert not [span for span in spans if "healthz" in span.name or "healthz" in str(span.attributes.get("http.url"))]
    assert not [span for span in statements(spans) if span.parent_span_id == ""]


def test_a_worker_process_exports_its_job_runs(
    tmp_path: Path, servers: list[Server], database_url: str, collector: OtlpCollector
) -> None:
    # given an untraced `serve` without workers, and a traced `portraits worker` under a service name of its own
    api = Server(tmp_path / "api", DATABASE_URL=database_url, JWT_SECRET=TEST_JWT_SECRET, WORKERS="0")
    servers.append(api)
    worker = Server(
        tmp_path / "worker",
        command="worker",
        DATABASE_URL=database_url,
        JWT_SECRET=TEST_JWT_SECRET,
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url + "/",
        OTEL_SERVICE_NAME="portraits-worker",
        **HELD_BATCHES,
    )
    servers.append(worker)
    api.wait_for(READY)
    assert "Tracing    off" in api.rest_of_output()
    worker.wait_for("portraits worker:")
    token = issue_token(TEST_JWT_SECRET, uuid.uuid4(), ttl=timedelta(minutes=5))

    # when the worker completes a portrait and stops
    job_id, _ = generate_portrait(api, token)
    assert worker.stop(signal.SIGTERM) == 0

    # then its last spans were flushed: the job run with its statements, and nothing from the untraced API
    spans = collector.snapshot()
    assert {span.resource.get("service.name") for span in spans} == {"portraits-worker"}
    (run,) = [span for span in spans if span.attributes.get("portraits.job.id") == job_id]
    assert run.name == "run job" and run.attributes["portraits.job.outcome"] == "completed"
    assert statements(children(spans, run))
    assert not [span for span in spans if span.kind == SERVER]
    assert api.stop(signal.SIGTERM) == 0


def test_without_an_endpoint_nothing_is_traced(
    tmp_path: Path, servers: list[Server], database_url: str, collector: OtlpCollector
) -> None:
    # given `serve` with other OTEL_* variables but no endpoint, and a collector listening
    server = Server(
        tmp_path,
        DATABASE_URL=database_url,
        JWT_SECRET=TEST_JWT_SECRET,
        OTEL_SERVICE_NAME="portraits-untraced",
        OTEL_BSP_SCHEDULE_DELAY="10",
        OTEL_TRACES_SAMPLER="always_on",
    )
    servers.append(server)
    server.wait_for(READY)
    token = issue_token(TEST_JWT_SECRET, uuid.uuid4(), ttl=timedelta(minutes=5))

    # when it serves requests and a job, then stops
    generate_portrait(server, token)
    assert server.stop(signal.SIGTERM) == 0

    # then it says tracing is off, and no request ever reached a collector
    assert "Tracing    off (set OTEL_EXPORTER_OTLP_ENDPOINT to export spans)" in server.rest_of_output()
    assert collector.requests == 0


def _chain(app: object) -> list[object]:
    """The app and the apps it wraps, outermost first (each middleware keeps the next as ``app``)."""
    found = []
    while app is not None:
        found.append(app)
        app = getattr(app, "app", None)
    return found


def test_the_app_has_the_opentelemetry_middleware_only_when_tracing_is_on(settings: Settings) -> None:
    off = _chain(create_app(replace(settings, tracing=TracingConfig())))
    on = _chain(create_app(replace(settings, tracing=TracingConfig(traces_endpoint="http://127.0.0.1:9/v1/traces"))))

    assert not [app for app in off if isinstance(app, OpenTelemetryMiddleware)]
    assert [type(app) for app in on if isinstance(app, OpenTelemetryMiddleware)] == [OpenTelemetryMiddleware]
    assert len(on) == len(off) + 1


@pytest.mark.parametrize(
    "query,redacted",
    [
        ("token=eyJhbGciOi.eyJ1cmwi.c2lnbmF0dXJl", "token=REDACTED"),
        ("query=%7B+viewer+%7B+id+%7D+%7D&variables=%7B%7D", "query=REDACTED&variables=REDACTED"),
        ("token", "token=REDACTED"),
        ("a=1&&b", "a=REDACTED&b=REDACTED"),
        ("eyJhbGciOi%2E%2E=1", "REDACTED=REDACTED"),
    ],
)
def test_query_strings_keep_parameter_names_only(query: str, redacted: str) -> None:
    assert redacted_query(query) == redacted
