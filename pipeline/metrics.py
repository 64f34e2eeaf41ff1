"""What the job queue reports to the process's metrics, as a Protocol: pipeline never imports prometheus.

``server/metrics.py`` implements it (``serve`` and ``portraits worker``); tests and tools that want no
metrics pass ``NO_JOB_METRICS``. Worker ids are operators' labels (host:pid:suffix), never a user's.
"""

from __future__ import annotations

from typing import Protocol

from storage.enums import JobAttemptOutcome, JobStatus, Provider


class JobMetrics(Protocol):
    def job_status(self, status: JobStatus, provider: Provider) -> None:
        """A worker moved a job into ``status`` (claimed: processing; retried or released: queued; ...)."""

    def attempt_ended(
        self, worker_id: str, outcome: JobAttemptOutcome, provider: Provider, seconds: float | None
    ) -> None:
        """An attempt of ``worker_id`` ended; ``seconds`` from its claim, when this process ran it."""

    def queue_waited(self, provider: Provider, seconds: float) -> None:
        """A job waited this long between being due and being claimed."""

    def reconnected(self, connection: str) -> None:
        """The worker's LISTEN connection (``queue``) came back after a loss."""


class NoJobMetrics:
    """Records nothing."""

    def job_status(self, status: JobStatus, provider: Provider) -> None:
        pass

    def attempt_ended(
        self, worker_id: str, outcome: JobAttemptOutcome, provider: Provider, seconds: float | None
    ) -> None:
        pass

    def queue_waited(self, provider: Provider, seconds: float) -> None:
        pass

    def reconnected(self, connection: str) -> None:
        pass


NO_JOB_METRICS: JobMetrics = NoJobMetrics()
