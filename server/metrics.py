"""The process's Prometheus metrics: one registry per app (or worker process), and what records into it.

Each ``create_app`` (and each ``portraits worker``) makes its own
``CollectorRegistry``, never prometheus_client's global one, so tests run
several apps in one process and each scrape shows its own app. ``Metrics``
implements the recorders the lower packages declare as Protocols
(graph/operation_metrics.py, pipeline/metrics.py, realtime/metrics.py), so
only ``server/`` imports prometheus_client.

No label holds a user id, a raw path or a token: routes are templates,
operation names come only from validated documents and are capped
(``MAX_OPERATION_NAMES``), codes and statuses are closed sets, worker ids
are ``host:pid:suffix``. Gauges (open websockets and subscriptions, pool
connections) are read when scraped, so the request path pays nothing for
them; the hot path pays one counter increment per request and operation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from storage.enums import JobAttemptOutcome, JobStatus, Provider

# Distinct values one label may take (operation names, error codes, worker ids); later ones count as OTHER.
MAX_OPERATION_NAMES = 100
MAX_ERROR_CODES = 50
# Worker ids come and go with every restart in the fleet (an abandoned attempt counts under its dead worker's id).
MAX_WORKER_IDS = 100
# Not a GraphQL name (those are [_A-Za-z][_0-9A-Za-z]*), so no client can send an operation that merges with it.
OTHER = "<other>"
# Jobs: from a fast local render (well under a second) to fal's slowest (FAL_TIMEOUT_SECONDS, 600 by default).
JOB_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# Queue waits: a woken worker claims within milliseconds; a backlog or a slow poll waits seconds to minutes.
QUEUE_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class LabelCap:
    """The first ``limit`` distinct values of a label pass; later ones become ``OTHER``, so a series count is bounded.

    Thread-safe: a worker's metrics server reads from another thread, and the set only grows under the lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(value)
        return value


class Children:
    """A labelled metric's children by label values: prometheus_client checks and locks in every ``labels()``
    call (about 9 us on a busy core), a dict lookup here costs a fraction of that after the first time.

    Bounded as the metric itself is: by the label values it is given (capped by ``LabelCap`` where clients
    choose them). Two threads making the same child at once get the same one from prometheus_client.
    """

    def __init__(self, metric: Counter | Histogram) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class Gauges:
    """Gauges read at scrape time from what the process already counts; sources are attached as they open."""

    def __init__(self) -> None:
        self.pool: asyncpg.Pool | None = None
        self.websockets: Callable[[], int] | None = None
        self.subscriptions: Callable[[], int] | None = None

    def collect(self) -> Iterable[Metric]:
        websockets = GaugeMetricFamily(
            "portraits_websockets_open", "GraphQL websockets open in this process (past the per-address cap)"
        )
        subscriptions = GaugeMetricFamily(
            "portraits_subscriptions_open", "GraphQL subscriptions live in this process's event hub"
        )
        pool = GaugeMetricFamily(
            "portraits_db_pool_connections", "The asyncpg pool's open connections, by state", labels=["state"]
        )
        pool_max = GaugeMetricFamily("portraits_db_pool_max_connections", "The asyncpg pool's size limit")
        if self.websockets is not None:
            websockets.add_metric([], self.websockets())
        if self.subscriptions is not None:
            subscriptions.add_metric([], self.subscriptions())
        if self.pool is not None:
            size, idle = self.pool.get_size(), self.pool.get_idle_size()
            pool.add_metric(["in_use"], size - idle)
            pool.add_metric(["idle"], idle)
            pool_max.add_metric([], self.pool.get_max_size())
        yield from (websockets, subscriptions, pool, pool_max)

    def describe(self) -> Iterable[Metric]:
        """The names, without reading any source (the registry asks once, at registration)."""
        yield GaugeMetricFamily("portraits_websockets_open", "")
        yield GaugeMetricFamily("portraits_subscriptions_open", "")
        yield GaugeMetricFamily("portraits_db_pool_connections", "", labels=["state"])
        yield GaugeMetricFamily("portraits_db_pool_max_connections", "")


class Metrics:
    """Every metric of one app or worker process, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.http_requests = Counter(
            "portraits_http_requests", "HTTP requests answered, by route template and status",
            ["route", "status"], registry=registry,
        )
        self.graphql_operations = Counter(
            "portraits_graphql_operations",
            "GraphQL operations by name (validated ones only, capped; else 'other'), type and outcome",
            ["operation", "type", "outcome"], registry=registry,
        )
        self.graphql_errors = Counter(
            "portraits_graphql_errors", "GraphQL errors in results, by extensions.code", ["code"], registry=registry
        )
        self.jobs = Counter(
            "portraits_jobs", "Jobs moved into a status by this process's workers, by provider",
            ["status", "provider"], registry=registry,
        )
        self.job_attempts = Counter(
            "portraits_job_attempts", "Job attempts ended, by the worker that ran them and outcome",
            ["worker", "outcome"], registry=registry,
        )
        self.job_duration = Histogram(
            "portraits_job_attempt_duration_seconds", "Time from a claim to the end of its attempt",
            ["provider", "outcome"], buckets=JOB_SECONDS_BUCKETS, registry=registry,
        )
        self.job_queue_wait = Histogram(
            "portraits_job_queue_wait_seconds", "Time a job waited between becoming due and being claimed",
            ["provider"], buckets=QUEUE_SECONDS_BUCKETS, registry=registry,
        )
        self.reconnects = Counter(
            "portraits_listen_reconnects",
            "LISTEN (events, relay, queue) and Redis pub/sub connections restored after a loss",
            ["connection"], registry=registry,
        )
        self.resyncs = Counter(
            "portraits_event_resyncs", "Resyncs the event hub sent to every subscription", registry=registry
        )
        self.gauges = Gauges()
        registry.register(self.gauges)
        ProcessCollector(registry=registry)  # process_resident_memory_bytes, process_open_fds, ...
        self._operation_names = LabelCap(MAX_OPERATION_NAMES)
        self._error_codes = LabelCap(MAX_ERROR_CODES)
        self._worker_ids = LabelCap(MAX_WORKER_IDS)
        self._requests = Children(self.http_requests)
        self._operations = Children(self.graphql_operations)
        self._errors = Children(self.graphql_errors)
        self._jobs = Children(self.jobs)
        self._attempts = Children(self.job_attempts)
        self._durations = Children(self.job_duration)
        self._queue_waits = Children(self.job_queue_wait)
        self._reconnects = Children(self.reconnects)

    # --- graph/operation_metrics.py: OperationMetrics ---------------------------------

    def operation(self, name: str, operation_type: str, outcome: str) -> None:
        self._operations(self._operation_names(name), operation_type, outcome).inc()

    def errors(self, codes: Iterable[str]) -> None:
        for code in codes:
            self._errors(self._error_codes(code)).inc()

    # --- pipeline/metrics.py: JobMetrics --------------------------------------------------

    def job_status(self, status: JobStatus, provider: Provider) -> None:
        self._jobs(status.value, provider.value).inc()

    def attempt_ended(
        self, worker_id: str, outcome: JobAttemptOutcome, provider: Provider, seconds: float | None
    ) -> None:
        self._attempts(self._worker_ids(worker_id), outcome.value).inc()
        if seconds is not None:
            self._durations(provider.value, outcome.value).observe(seconds)

    def queue_waited(self, provider: Provider, seconds: float) -> None:
        self._queue_waits(provider.value).observe(seconds)

    # --- realtime/metrics.py: EventMetrics (and the worker's queue connection) -------------

    def reconnected(self, connection: str) -> None:
        self._reconnects(connection).inc()

    def resynced(self) -> None:
        self.resyncs.inc()

    # --- HTTP ----------------------------------------------------------------------------

    def request(self, route: str, status: int) -> None:
        self._requests(route, str(status)).inc()

