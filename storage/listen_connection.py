"""One dedicated PostgreSQL connection that LISTENs on some channels and keeps itself alive.

LISTEN is session state, so it never goes on a pooled connection. The
connection is watched two ways: asyncpg's termination listener (the server
closed it, e.g. ``pg_terminate_backend``) and a periodic ``SELECT 1`` with a
timeout (a silent network loss). Either way it is reopened with exponential
backoff and LISTENs again; ``on_connected(after_gap=True)`` then tells the
owner that notifications may have been lost, since PostgreSQL does not keep
them for a listener that was away.

A ``gate`` (the Redis relay's slot) runs after LISTEN, and what is heard
while it runs is held until it says yes (then handed over) or no (then
dropped with the connection): so a connection the gate lets through has
missed nothing since its LISTEN, even a notification sent while the gate
was deciding. A refused connection is closed before its held
notifications are dropped, so nothing it hears while closing is handed on
by a process the gate turned away.

Every wait before reopening is jittered (``jittered``): processes that lost
the database together do not come back in lockstep, and relays starting
together do not keep meeting at the slot gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg

from storage.errors import StorageError, StorageUnavailable

logger = logging.getLogger(__name__)

CONNECT_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, TimeoutError)
# What opening can raise: the above, and a gate's storage call (already wrapped).
OPEN_ERRORS = (*CONNECT_ERRORS, StorageError)
INITIAL_BACKOFF_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 30.0
HEALTH_CHECK_SECONDS = 15.0
HEALTH_CHECK_TIMEOUT_SECONDS = 5.0
# A connection that lived at least this long resets the backoff.
STABLE_SECONDS = 5.0

NotificationHandler = Callable[[str], None]
# Runs on a fresh connection once it LISTENs; False means "not now" (e.g. every
# relay slot is taken): the connection is closed and tried again later.
ConnectionGate = Callable[[asyncpg.Connection], Awaitable[bool]]


def jittered(seconds: float) -> float:
    """A wait of between half and all of ``seconds``, so processes that fail together retry apart."""
    return seconds * random.uniform(0.5, 1.0)


class Backoff:
    """The waits of a reconnect loop (this LISTEN connection's, and the Redis backend's pub/sub).

    Doubling from ``INITIAL_BACKOFF_SECONDS`` up to ``maximum``, each wait
    jittered; a connection that lived ``STABLE_SECONDS`` starts it over, one
    lost right after opening does not, so a flapping server is not hammered.
    """

    def __init__(self, maximum: float = MAX_BACKOFF_SECONDS) -> None:
        self.maximum = maximum
        self.seconds = INITIAL_BACKOFF_SECONDS  # the next wait's upper bound

    async def wait(self) -> None:
        await asyncio.sleep(jittered(self.seconds))
        self.seconds = min(self.seconds * 2, self.maximum)

    async def after_loss(self, opened_at: float) -> None:
        """A connection opened at ``opened_at`` (``time.monotonic()``) was lost: start over, or wait if it flapped."""
        if time.monotonic() - opened_at >= STABLE_SECONDS:
            self.seconds = INITIAL_BACKOFF_SECONDS
        else:
            await self.wait()


class ListenConnection:
    def __init__(
        self,
        dsn: str,
        *,
        listeners: Mapping[str, NotificationHandler],
        on_connected: Callable[[bool], None],
        application_name: str,
        gate: ConnectionGate | None = None,
        gate_retry_seconds: float = 2.0,
        health_check_seconds: float = HEALTH_CHECK_SECONDS,
        max_backoff_seconds: float = MAX_BACKOFF_SECONDS,
    ) -> None:
        self._dsn = dsn
        self._listeners = dict(listeners)
        self._channels = ", ".join(listeners)  # for logs
        self._on_connected = on_connected
        self._application_name = application_name
        self._gate = gate
        self._gate_retry_seconds = gate_retry_seconds
        self._health_check_seconds = health_check_seconds
        self._max_backoff_seconds = max_backoff_seconds
        self._connection: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._lock = asyncio.Lock()  # one statement at a time on the connection (asyncpg allows no more)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # While a gate decides: (channel, payload) heard meanwhile, handed over only if it says yes.
        self._held: list[tuple[str, str]] | None = None

    async def start(self) -> None:
        """Try once inline, so LISTEN is in place when ``start`` returns; keep trying in the background if not."""
        connected = False
        try:
            connected = await self._open()
        except OPEN_ERRORS as error:
            logger.warning("cannot LISTEN on %s yet (%s); retrying in the background", self._channels, error)
        if connected:
            self._on_connected(False)
        self._task = asyncio.create_task(self._keep_listening(connected), name=f"listen-{self._channels}")

    async def close(self) -> None:
        """Stop listening for good; logs what it closed, so a stop says so."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        was_open = self._connection is not None
        await self._drop()
        logger.info("stopped listening on %s%s", self._channels, "" if was_open else " (was not connected)")

    async def execute(self, query: str, *args: Any) -> None:
        """Run one statement on the LISTEN connection (for NOTIFY); serialised, so concurrent callers never clash."""
        async with self._lock:
            connection = self._connection
            if connection is None:
                raise StorageUnavailable(f"the LISTEN connection for {self._channels} is down")
            try:
                await connection.execute(query, *args)
            except CONNECT_ERRORS as error:
                raise StorageUnavailable(str(error)) from error

    async def _open(self) -> bool:
        connection = await asyncpg.connect(
            self._dsn, timeout=10, server_settings={"application_name": self._application_name}
        )
        try:
            if self._gate is not None:
                self._held = []
            for channel in self._listeners:
                await connection.add_listener(channel, self._notified)
            if self._gate is not None and not await self._gate(connection):
                await connection.close(timeout=5)  # still holding: what comes while it closes is dropped
                self._held = None
                return False
            connection.add_termination_listener(self._terminated)
        except BaseException:
            self._held = None
            connection.terminate()
            raise
        self._lost.clear()
        self._connection = connection
        held, self._held = self._held, None
        for channel, payload in held or ():
            self._dispatch(channel, payload)
        return True

    async def _keep_listening(self, connected: bool) -> None:
        backoff = Backoff(self._max_backoff_seconds)
        while True:
            if connected:
                opened_at = time.monotonic()
                await self._watch()
                await self._drop()
                logger.warning("LISTEN connection for %s lost; reconnecting", self._channels)
                connected = False
                await backoff.after_loss(opened_at)
            try:
                connected = await self._open()
            except OPEN_ERRORS as error:
                logger.warning(
                    "LISTEN on %s still down (%s); retrying in at most %.2f s", self._channels, error, backoff.seconds
                )
                await backoff.wait()
                continue
            if not connected:
                await asyncio.sleep(jittered(self._gate_retry_seconds))
                continue
            logger.info("LISTEN on %s restored", self._channels)
            self._on_connected(True)

    async def _watch(self) -> None:
        """Return when the connection is lost or stops answering."""
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), timeout=self._health_check_seconds)
                return
            except TimeoutError:
                pass
            try:
                async with self._lock:
                    assert self._connection is not None
                    await self._connection.fetchval("SELECT 1", timeout=HEALTH_CHECK_TIMEOUT_SECONDS)
            except CONNECT_ERRORS as error:
                logger.warning("LISTEN connection for %s does not answer (%s)", self._channels, error)
                return

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None or connection.is_closed():
            return
        try:
            await connection.close(timeout=2)
        except CONNECT_ERRORS:
            connection.terminate()

    def _terminated(self, connection: object) -> None:
        if not self._closing:
            self._lost.set()

    def _notified(self, connection: object, pid: int, channel: str, payload: object) -> None:
        if self._held is not None:
            self._held.append((channel, str(payload)))
            return
        self._dispatch(channel, str(payload))

    def _dispatch(self, channel: str, payload: str) -> None:
        try:
            self._listeners[channel](payload)
        except Exception:  # a handler bug must not kill asyncpg's protocol callback
            logger.exception("the %s handler failed on %.200r", channel, payload)
