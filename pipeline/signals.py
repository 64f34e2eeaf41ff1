"""The worker's LISTEN connection: "a job is ready" and "this running job was canceled".

One dedicated, self-healing connection (storage/listen_connection.py: LISTEN
is session state, never on a pooled one; reopened with backoff when lost).
Meanwhile the worker's slow poll still finds work, and after reconnecting
the worker is woken once, since a notification sent during the gap is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from uuid import UUID

from pipeline.metrics import NO_JOB_METRICS, JobMetrics
from storage.listen_connection import ListenConnection

logger = logging.getLogger(__name__)

READY_CHANNEL = "portraits_jobs_ready"
CANCELED_CHANNEL = "portraits_jobs_canceled"
# How the connection shows in pg_stat_activity.
APPLICATION_NAME = "portraits-worker-listen"


class QueueSignals:
    def __init__(
        self, dsn: str, *, on_canceled: Callable[[UUID], None], metrics: JobMetrics = NO_JOB_METRICS
    ) -> None:
        self._on_canceled = on_canceled
        self._metrics = metrics
        self.ready = asyncio.Event()
        self._listen = ListenConnection(
            dsn,
            listeners={READY_CHANNEL: self._ready, CANCELED_CHANNEL: self._canceled},
            on_connected=self._connected,
            application_name=APPLICATION_NAME,
        )

    async def start(self) -> None:
        """Listen before the first claim, so nothing queued after it is missed; keeps trying in the background."""
        await self._listen.start()

    async def close(self) -> None:
        await self._listen.close()

    def _connected(self, after_gap: bool) -> None:
        if after_gap:
            self._metrics.reconnected("queue")
            self.ready.set()

    def _ready(self, payload: str) -> None:
        self.ready.set()

    def _canceled(self, payload: str) -> None:
        try:
            job_id = UUID(payload)
        except ValueError:
            logger.warning("ignoring a malformed cancel notification %r", payload)
            return
        self._on_canceled(job_id)
