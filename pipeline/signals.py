"""The worker's LISTEN connection: "a job is ready" and "this running job was canceled".

One dedicated connection (LISTEN is session state, never on a pooled one).
When it drops, it is reopened with backoff; meanwhile the worker's slow poll
still finds work, and after reconnecting the worker is woken once, since a
notification sent during the gap is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from uuid import UUID

import asyncpg

logger = logging.getLogger(__name__)

READY_CHANNEL = "portraits_jobs_ready"
CANCELED_CHANNEL = "portraits_jobs_canceled"
MAX_BACKOFF_SECONDS = 30.0
# How the connection shows in pg_stat_activity.
APPLICATION_NAME = "portraits-worker-listen"


class QueueSignals:
    def __init__(self, dsn: str, *, on_canceled: Callable[[UUID], None]) -> None:
        self._dsn = dsn
        self._on_canceled = on_canceled
        self.ready = asyncio.Event()
        self._connection: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        """Listen before the first claim, so nothing queued after it is missed; keeps trying in the background."""
        try:
            await self._connect()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
            logger.warning("cannot LISTEN yet (%s); polling until the connection is back", error)
            self._lost.set()
        self._task = asyncio.create_task(self._keep_connected(), name="queue-signals")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._connection.close(), timeout=5)
            self._connection = None

    async def _connect(self) -> None:
        connection = await asyncpg.connect(self._dsn, timeout=10, server_settings={"application_name": APPLICATION_NAME})
        connection.add_termination_listener(self._terminated)
        await connection.add_listener(READY_CHANNEL, self._ready)
        await connection.add_listener(CANCELED_CHANNEL, self._canceled)
        self._connection = connection
        self._lost.clear()

    async def _keep_connected(self) -> None:
        backoff = 0.5
        while True:
            await self._lost.wait()
            self._connection = None
            try:
                await self._connect()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
                logger.warning("LISTEN connection still down (%s); retrying in %.1f s", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            backoff = 0.5
            logger.info("LISTEN connection restored")
            self.ready.set()

    def _terminated(self, connection: asyncpg.Connection) -> None:
        if self._closing:
            return
        logger.warning("LISTEN connection lost; reconnecting")
        self._lost.set()

    def _ready(self, connection: object, pid: int, channel: str, payload: str) -> None:
        self.ready.set()

    def _canceled(self, connection: object, pid: int, channel: str, payload: str) -> None:
        try:
            job_id = UUID(payload)
        except ValueError:
            logger.warning("ignoring a malformed cancel notification %r", payload)
            return
        self._on_canceled(job_id)
