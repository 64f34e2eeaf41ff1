"""The job-queue worker: claims jobs from the ``jobs`` table and runs them, a few at a time.

- Claims use ``FOR UPDATE SKIP LOCKED``, so any number of workers (in
  ``serve`` or ``portraits worker`` processes) share one queue and never run
  the same job at once.
- A claim is a lease; a live worker renews its leases every third of their
  length. A job whose worker died is claimed again when its lease runs out.
- Workers wake on NOTIFY and poll slowly as a fallback (and for retries whose
  backoff has passed).
- A failed attempt goes back to the queue with exponential backoff until
  ``max_attempts``; then the job is ``failed`` with a readable error.
- A canceled running job is stopped at once, and its provider request canceled.
- Each claim opens an attempt in ``job_attempts`` (who: this worker's id,
  host and pid) in the claim's transaction, and the write that ends the
  attempt closes it in its own; the job row keeps the worker of its latest
  attempt (``jobs.worker_id``) after the lease is cleared.
- A failure the worker cannot record because the database is unreachable is
  recorded as soon as it is back (tried again with backoff, the lease kept
  renewed meanwhile), rather than left for the lease to run out: an attempt
  cut off by a database outage goes back to the queue at once, and the job
  finishes seconds after the database returns, not a whole lease later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
from opentelemetry import trace

from observability.log_context import bind_job
from pipeline.generation import JobFailed, JobRunner, LeaseLost
from pipeline.metrics import NO_JOB_METRICS, JobMetrics
from pipeline.signals import QueueSignals
from pipeline.wakeups import Wakeups
from storage import job_attempts, jobs
from storage.database import Connection, acquire, transaction
from storage.enums import JobAttemptOutcome, JobStatus
from storage.errors import StorageError, StorageUnavailable
from storage.jobs import ClaimedJob

logger = logging.getLogger(__name__)

# What an attempt's owner reads in its error (never which worker: that is for operators).
ABANDONED_ERROR = "its worker stopped renewing the lease, and the job was claimed again"
LEASE_LOST_ERROR = "the lease ran out while its worker still ran the job, and the job was claimed again"
RELEASED_ERROR = "its worker stopped before finishing and handed the job back to the queue"

# How a job run ended: its span's portraits.job.outcome (Worker._execute); those that are errors mark the span's status.
COMPLETED, RETRYING, FAILED, CANCELED, LEASE_LOST, RELEASED, INTERRUPTED = (
    "completed", "retrying", "failed", "canceled", "lease_lost", "released", "interrupted"
)
_ERROR_OUTCOMES = frozenset({RETRYING, FAILED})
DATABASE_LOST_ERROR = "the database became unreachable during the attempt; retried once it was back"

# Trying again to record an outcome while the database is unreachable: the first wait, doubling up to the last.
RECORD_RETRY_FIRST_SECONDS = 0.25
RECORD_RETRY_MAX_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    """Who runs an attempt, as ``job_attempts`` and ``jobs.worker_id`` keep it for operators.

    The id is ``host:pid:suffix``: an operator finds the machine and the process
    in it, and the random suffix tells apart the workers of one process (WORKERS=N)
    and a pid reused after a restart.
    """

    worker_id: str
    host: str
    pid: int

    @classmethod
    def of_this_process(cls, name: str | None = None) -> WorkerIdentity:
        """A fresh identity on this host and process; ``name`` replaces the generated id."""
        host = socket.gethostname()
        pid = os.getpid()
        return cls(worker_id=name or f"{host}:{pid}:{secrets.token_hex(3)}", host=host, pid=pid)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    concurrency: int = 4
    lease_seconds: float = 30.0
    poll_seconds: float = 5.0
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    sweep_interval_seconds: float = 600.0
    shutdown_grace_seconds: float = 10.0


@dataclass(slots=True)
class _Running:
    lease_token: str
    task: asyncio.Task[None]
    claimed_at: float  # time.monotonic(), for the attempt's duration
    # Why we cancelled the task ourselves: "canceled" (by the user), "lost" (lease), "shutdown".
    stop_reason: str | None = None


def backoff_seconds(attempt: int, *, base: float, maximum: float) -> float:
    """base, 2 base, 4 base, ... capped, with +-20 % jitter so retries of a burst spread out."""
    delay = min(maximum, base * 2.0 ** max(attempt - 1, 0))
    return delay * random.uniform(0.8, 1.2)


class Worker:
    def __init__(
        self,
        *,
        dsn: str,
        pool: asyncpg.Pool,
        runner: JobRunner,
        config: WorkerConfig,
        sweep: Callable[[], Awaitable[object]] | None = None,
        name: str | None = None,
        metrics: JobMetrics = NO_JOB_METRICS,
        wakeups: Wakeups | None = None,
    ) -> None:
        self.identity = WorkerIdentity.of_this_process(name)
        self.metrics = metrics
        self.pool = pool
        self.runner = runner
        self.config = config
        self._sweep = sweep
        # The process's provider waits (pipeline/wakeups.py), woken by verified webhooks' NOTIFY.
        self.signals = QueueSignals(
            dsn, on_canceled=self._job_canceled, metrics=metrics,
            on_provider_done=None if wakeups is None else wakeups.wake,
        )
        self._running: dict[UUID, _Running] = {}
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # One span per job run, through OpenTelemetry's API only: a no-op unless `serve` or `worker` set tracing up
        # (server/tracing.py, when OTEL_EXPORTER_OTLP_ENDPOINT is set) before starting workers.
        self._tracer = trace.get_tracer(__name__)

    @property
    def name(self) -> str:
        """The worker id (host:pid:suffix), in logs, task names and lease tokens."""
        return self.identity.worker_id

    async def start(self) -> None:
        await self.signals.start()
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name=f"{self.name}-claim"),
            asyncio.create_task(self._renew_loop(), name=f"{self.name}-renew"),
        ]
        if self._sweep is not None and self.config.sweep_interval_seconds > 0:
            self._tasks.append(asyncio.create_task(self._sweep_loop(), name=f"{self.name}-sweep"))
        logger.info("%s started: %d job(s) at a time", self.name, self.config.concurrency)

    async def stop(self) -> None:
        """Stop claiming, let running jobs finish for a grace period, then hand the rest back to the queue."""
        self._stopping.set()
        self.signals.ready.set()
        if self._tasks:
            # The claim loop ends at its next check. A claim under way commits first, and its job
            # must be among those handed back below, not left running after the worker stopped.
            await asyncio.wait(self._tasks[:1], timeout=self.config.shutdown_grace_seconds + 5)
        running = [entry.task for entry in self._running.values()]
        if running:
            await asyncio.wait(running, timeout=self.config.shutdown_grace_seconds)
        for entry in list(self._running.values()):
            entry.stop_reason = "shutdown"
            entry.task.cancel()
        remaining = [entry.task for entry in self._running.values()]
        if remaining:
            await asyncio.wait(remaining, timeout=5)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.signals.close()
        logger.info("%s stopped", self.name)

    @property
    def running_jobs(self) -> set[UUID]:
        return set(self._running)

    # --- claiming ---------------------------------------------------------------

    async def _claim_loop(self) -> None:
        error_backoff = 0.5
        while not self._stopping.is_set():
            # Cleared before claiming: a notification arriving meanwhile wakes the next wait.
            self.signals.ready.clear()
            try:
                while len(self._running) < self.config.concurrency and not self._stopping.is_set():
                    if not await self._claim_one():
                        break
                error_backoff = 0.5
            except Exception as error:  # the loop must outlive any one failure, or the worker dies silently
                if isinstance(error, StorageError):
                    logger.warning("%s cannot claim (%s); retrying in %.1f s", self.name, error, error_backoff)
                else:
                    logger.exception(
                        "%s: unexpected error while claiming; retrying in %.1f s", self.name, error_backoff
                    )
                # A job handed back (or a LISTEN restored) meanwhile wakes it, as in the idle wait below.
                await self._wait_for(self.signals.ready, timeout=error_backoff)
                error_backoff = min(error_backoff * 2, self.config.poll_seconds)
                continue
            if len(self._running) >= self.config.concurrency:
                self._slot_free.clear()
                await self._wait_for(self._slot_free, timeout=None)
            else:
                await self._wait_for(self.signals.ready, timeout=await self._idle_timeout())

    async def _claim_one(self) -> bool:
        lease_token = f"{self.name}/{uuid.uuid4().hex[:12]}"
        # One transaction: a crash never leaves a claimed job without its attempt, or an attempt without its claim.
        async with transaction(self.pool) as connection:
            claimed = await jobs.claim(
                connection, lease_token=lease_token, worker_id=self.name, lease_seconds=self.config.lease_seconds
            )
            if claimed is None:
                return False
            abandoned = await job_attempts.close_running(
                connection, job_id=claimed.job.id, outcome=JobAttemptOutcome.ABANDONED, error=ABANDONED_ERROR
            )
            await job_attempts.start(
                connection, job_id=claimed.job.id, lease_token=lease_token, worker_id=self.name,
                host=self.identity.host, pid=self.identity.pid,
            )
        claimed_at = time.monotonic()
        for attempt in abandoned:
            logger.warning(
                "%s: job %s taken over; its attempt %d by %s (pid %d on %s) stopped renewing its lease",
                self.name, claimed.job.id, attempt.number, attempt.worker_id, attempt.pid, attempt.host,
            )
            self.metrics.attempt_ended(attempt.worker_id, JobAttemptOutcome.ABANDONED, claimed.provider, None)
        self.metrics.job_status(JobStatus.PROCESSING, claimed.provider)
        if not abandoned:  # (a job taken over was due long ago: its wait would count the dead worker's time)
            waited = (claimed.claimed_at - claimed.job.run_after).total_seconds()
            self.metrics.queue_waited(claimed.provider, max(waited, 0.0))
        task = asyncio.create_task(self._execute(claimed, lease_token), name=f"job-{claimed.job.id}")
        self._running[claimed.job.id] = _Running(lease_token, task, claimed_at)
        task.add_done_callback(lambda _: self._finished(claimed.job.id, lease_token))
        return True

    def _finished(self, job_id: UUID, lease_token: str) -> None:
        entry = self._running.get(job_id)
        if entry is not None and entry.lease_token == lease_token:
            del self._running[job_id]
        self._slot_free.set()

    async def _idle_timeout(self) -> float:
        """The poll interval, or less when a retry or an expired lease falls due sooner."""
        try:
            due = await jobs.next_due(self.pool)
        except StorageError:
            return self.config.poll_seconds
        except Exception:  # outside the claim loop's guard: whatever it is must not end the loop
            logger.exception("%s: unexpected error while looking for the next due job", self.name)
            return self.config.poll_seconds
        if due is None:
            return self.config.poll_seconds
        seconds = (due - datetime.now(UTC)).total_seconds()
        return min(self.config.poll_seconds, max(seconds, 0.05))

    async def _wait_for(self, event: asyncio.Event, *, timeout: float | None) -> None:
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._stopping.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    # --- running one job ----------------------------------------------------------

    async def _execute(self, claimed: ClaimedJob, lease_token: str) -> None:
        job = claimed.job
        bind_job(job.id, job.user_id)  # this task's log lines name the job and its owner
        attributes = {
            "portraits.job.id": str(job.id),
            "portraits.job.destination": job.destination.value,
            "portraits.job.model": job.model_key,
            "portraits.job.provider": claimed.provider.value,
            "portraits.job.attempt": job.attempts,
            "portraits.worker.id": self.name,
        }
        # The run's statements are the span's children. Never the prompt (user content), nor the user.
        with self._tracer.start_as_current_span("run job", attributes=attributes) as span:
            outcome = await self._run(claimed, lease_token)
            span.set_attribute("portraits.job.outcome", outcome)
            if outcome in _ERROR_OUTCOMES:
                span.set_status(trace.StatusCode.ERROR)

    async def _run(self, claimed: ClaimedJob, lease_token: str) -> str:
        """Run the job and record how it ended; returns the outcome."""
        job = claimed.job
        try:
            if job.attempts > job.max_attempts:
                raise JobFailed(
                    f"gave up after {job.max_attempts} attempts: the workers running it stopped mid-job",
                    retryable=False,
                )
            logger.info("job %s: attempt %d started on %s", job.id, job.attempts, claimed.provider.value)
            await self.runner.run(claimed, lease_token)
            self._attempt_recorded(claimed, lease_token, JobAttemptOutcome.COMPLETED, JobStatus.COMPLETED)
            logger.info("job %s completed", job.id)
        except asyncio.CancelledError:
            return await self._stopped(claimed, lease_token)
        except LeaseLost as error:
            logger.info("%s: %s", self.name, error)
            await self._lease_lost(lease_token)
            self._attempt_recorded(claimed, lease_token, JobAttemptOutcome.LEASE_LOST, None)
            return LEASE_LOST
        except JobFailed as error:
            return await self._failed(claimed, lease_token, error)
        except StorageUnavailable as error:
            # Not the job's fault: once the failure is recorded (the database is back), it goes back at once.
            logger.warning("job %s: the database became unreachable: %s", job.id, error)
            return await self._failed(
                claimed, lease_token, JobFailed(DATABASE_LOST_ERROR, retryable=True), retry_now=True
            )
        except StorageError as error:
            logger.warning("job %s: storage failed: %s", job.id, error)
            return await self._failed(claimed, lease_token, JobFailed(f"storage failed: {error}", retryable=True))
        except Exception:
            logger.exception("job %s: unexpected error", job.id)
            return await self._failed(
                claimed, lease_token, JobFailed("internal error while generating", retryable=True)
            )
        return COMPLETED

    async def _failed(
        self, claimed: ClaimedJob, lease_token: str, error: JobFailed, *, retry_now: bool = False
    ) -> str:
        """Record the attempt's failure: back to the queue with backoff (at once with ``retry_now``), or failed;
        returns which (RETRYING or FAILED)."""
        job = claimed.job
        retrying = error.retryable and job.attempts < job.max_attempts
        if retrying:
            delay = 0.0 if retry_now else backoff_seconds(
                job.attempts, base=self.config.retry_base_seconds, maximum=self.config.retry_max_seconds
            )
            logger.info(
                "job %s attempt %d failed (%s); retrying in %.1f s", job.id, job.attempts, error.message, delay
            )

            async def record() -> None:
                async with transaction(self.pool) as connection:
                    retried = await jobs.retry_later(
                        connection, job_id=job.id, lease_token=lease_token, error=error.message, delay_seconds=delay
                    )
                    if retried:
                        await self._attempt_failed(connection, job.id, lease_token, error)
                if retried:
                    self._attempt_recorded(claimed, lease_token, JobAttemptOutcome.FAILED, JobStatus.QUEUED)
        else:
            message = (
                error.message if not error.retryable else f"failed after {job.attempts} attempts: {error.message}"
            )
            logger.info("job %s failed: %s", job.id, message)

            async def record() -> None:
                async with transaction(self.pool) as connection:
                    failed = await jobs.fail(connection, job_id=job.id, lease_token=lease_token, error=message)
                    if failed:
                        await self._attempt_failed(connection, job.id, lease_token, error)
                if failed:
                    self._attempt_recorded(claimed, lease_token, JobAttemptOutcome.FAILED, JobStatus.FAILED)

        if await self._record_until_reachable(job.id, record):
            # (the claim loop may be asleep after failing to claim during the same outage)
            self.signals.ready.set()
        return RETRYING if retrying else FAILED

    async def _record_until_reachable(self, job_id: UUID, record: Callable[[], Awaitable[None]]) -> bool:
        """Run ``record`` (a write fenced by the lease); while the database is unreachable, try again with backoff.

        The job stays in ``_running`` meanwhile, so its lease is renewed as soon
        as the database answers again: the write lands then, instead of the job
        waiting for its lease to run out. Gives up (False) on another storage
        error, when the worker stops, or after a lease's length of tries (an
        "unreachable" that is really a write stuck behind a lock must not hold
        the job for ever while its lease keeps being renewed); then the lease
        runs out and the job is claimed again, as before. A write the fence
        refuses (another worker has the job) does nothing, and is not an error.
        """
        wait = RECORD_RETRY_FIRST_SECONDS
        deadline = time.monotonic() + self.config.lease_seconds
        while True:
            try:
                await record()
                return True
            except StorageUnavailable as error:
                if self._stopping.is_set() or time.monotonic() >= deadline:
                    logger.warning("job %s: could not record its failure (%s); left to its lease", job_id, error)
                    return False
                if wait == RECORD_RETRY_FIRST_SECONDS:
                    logger.warning(
                        "job %s: cannot record its failure while the database is unreachable (%s); "
                        "trying again until it is back", job_id, error,
                    )
                await self._sleep(wait * random.uniform(0.8, 1.2))
                wait = min(wait * 2, RECORD_RETRY_MAX_SECONDS)
            except StorageError as error:
                # The lease runs out and another worker takes the job again.
                logger.warning("job %s: could not record its failure (%s)", job_id, error)
                return False

    @staticmethod
    async def _attempt_failed(connection: Connection, job_id: UUID, lease_token: str, error: JobFailed) -> None:
        """The attempt's own error (not the job's "failed after N attempts" summary), and whether it could retry."""
        await job_attempts.finish(
            connection, job_id=job_id, lease_token=lease_token, outcome=JobAttemptOutcome.FAILED,
            error=error.message, retryable=error.retryable,
        )

    def _attempt_recorded(
        self, claimed: ClaimedJob, lease_token: str, outcome: JobAttemptOutcome, status: JobStatus | None
    ) -> None:
        """Metrics of an attempt that ended (and of the status it moved its job to, when this worker moved it)."""
        entry = self._running.get(claimed.job.id)
        ran = entry is not None and entry.lease_token == lease_token
        seconds = time.monotonic() - entry.claimed_at if entry is not None and ran else None
        if status is not None:
            self.metrics.job_status(status, claimed.provider)
        self.metrics.attempt_ended(self.name, outcome, claimed.provider, seconds)

    async def _lease_lost(self, lease_token: str) -> None:
        """Say the attempt's worker was alive (slow, or cut off) rather than dead: operators look for slow workers."""
        try:
            await job_attempts.mark_lease_lost(self.pool, lease_token=lease_token, error=LEASE_LOST_ERROR)
        except StorageError as error:
            logger.warning("%s: could not record the lease of %s as lost (%s)", self.name, lease_token, error)

    async def _stopped(self, claimed: ClaimedJob, lease_token: str) -> str:
        """Wind a cancelled run down by why it was cancelled; returns the outcome (CANCELED, LEASE_LOST, RELEASED)."""
        entry = self._running.get(claimed.job.id)
        reason = entry.stop_reason if entry is not None else "shutdown"
        try:
            if reason in ("canceled", "lost"):
                await self._cancel_at_provider(claimed, lease_token)
            elif reason == "shutdown":
                async with transaction(self.pool) as connection:
                    released = await jobs.release(connection, job_id=claimed.job.id, lease_token=lease_token)
                    if released:
                        await job_attempts.finish(
                            connection, job_id=claimed.job.id, lease_token=lease_token,
                            outcome=JobAttemptOutcome.RELEASED, error=RELEASED_ERROR,
                        )
                if released:
                    self._attempt_recorded(claimed, lease_token, JobAttemptOutcome.RELEASED, JobStatus.QUEUED)
        except StorageError as error:
            logger.warning("job %s: could not wind down after %s (%s)", claimed.job.id, reason, error)
        return {"canceled": CANCELED, "lost": LEASE_LOST, "shutdown": RELEASED}.get(reason or "", INTERRUPTED)

    async def _cancel_at_provider(self, claimed: ClaimedJob, lease_token: str) -> None:
        """A job canceled by its user stops costing money; one merely claimed by another worker is left alone."""
        async with acquire(self.pool) as connection:
            job = await jobs.get(connection, user_id=claimed.job.user_id, job_id=claimed.job.id)
        if job is None or job.status is not JobStatus.CANCELED:
            logger.info("job %s was taken over by another worker", claimed.job.id)
            await self._lease_lost(lease_token)
            self._attempt_recorded(claimed, lease_token, JobAttemptOutcome.LEASE_LOST, None)
            return
        self._attempt_recorded(claimed, lease_token, JobAttemptOutcome.CANCELED, None)
        provider = self.runner.providers.get(claimed.provider)
        if job.provider_request_id is not None and provider is not None:
            await provider.cancel(model_key=job.model_key, request_id=job.provider_request_id)
        logger.info("job %s canceled while running", claimed.job.id)

    def _job_canceled(self, job_id: UUID) -> None:
        entry = self._running.get(job_id)
        if entry is not None and entry.stop_reason is None:
            entry.stop_reason = "canceled"
            entry.task.cancel()

    # --- leases and sweeping --------------------------------------------------------

    async def _renew_loop(self) -> None:
        interval = self.config.lease_seconds / 3
        while not self._stopping.is_set():
            await self._sleep(interval)
            for job_id, entry in list(self._running.items()):
                try:
                    kept = await jobs.extend_lease(
                        self.pool, job_id=job_id, lease_token=entry.lease_token, lease_seconds=self.config.lease_seconds
                    )
                except Exception as error:  # noqa: BLE001 - one lease's failure, whatever it is, must not stop the rest
                    logger.warning("job %s: lease not renewed (%s)", job_id, error)
                    continue
                if not kept and entry.stop_reason is None:
                    # Canceled (and the notification missed) or claimed by another worker.
                    entry.stop_reason = "lost"
                    entry.task.cancel()

    async def _sweep_loop(self) -> None:
        assert self._sweep is not None
        while not self._stopping.is_set():
            await self._sleep(self.config.sweep_interval_seconds * random.uniform(0.5, 1.0))
            if self._stopping.is_set():
                return
            try:
                await self._sweep()
            except StorageError as error:
                logger.warning("sweep failed: %s", error)
            except Exception:
                logger.exception("sweep failed")
