"""The worker's LISTEN connection: "a job is ready", "this running job was canceled", "the provider is done".

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
from pipeline.wakeups import EVERYONE
from storage.listen_connection import ListenConnection

logger = logging.getLogger(__name__)

READY_CHANNEL = "portraits_jobs_ready"
CANCELED_CHANNEL = "portraits_jobs_canceled"
# A verified provider webhook (server/webhooks/): "fal:<request id>" is done; its watcher asks the provider now.
PROVIDER_DONE_CHANNEL = "portraits_provider_done"
# How the connection shows in pg_stat_activity.
APPLICATION_NAME = "portraits-worker-listen"


class QueueSignals:
    def __init__(
        self,
        dsn: str,
        *,
        on_canceled: Callable[[UUID], None],
        metrics: JobMetrics = NO_JOB_METRICS,
        on_provider_done: Callable[[str], object] | None = None,
    ) -> None:
        self._on_canceled = on_canceled
        self._on_provider_done = on_provider_done
        self._metrics = metrics
        self.ready = asyncio.Event()
        listeners: dict[str, Callable[[str], None]] = {READY_CHANNEL: self._ready, CANCELED_CHANNEL: self._canceled}
        if on_provider_done is not None:
            listeners[PROVIDER_DONE_CHANNEL] = self._provider_done
        self._listen = ListenConnection(
            dsn,
            listeners=listeners,
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
            if self._on_provider_done is not None:
                # A webhook's notification sent during the gap is lost: every waiting poll asks its provider now.
                self._on_provider_done(EVERYONE)

    def _ready(self, payload: str) -> None:
        self.ready.set()

    def _canceled(self, payload: str) -> None:
        try:
            job_id = UUID(payload)
        except ValueError:
            logger.warning("ignoring a malformed cancel notification %r", payload)
            return
        self._on_canceled(job_id)

    def _provider_done(self, payload: str) -> None:
        if self._on_provider_done is not None:
            self._on_provider_done(payload)
