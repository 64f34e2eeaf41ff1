"""The health check's own PostgreSQL connection, so ``/healthz`` never waits for a pooled one.

A pool whose every connection is taken by requests is busy, not down: a
check that queued for a pooled connection would time out and report a
healthy database as unreachable, and a load balancer or Docker HEALTHCHECK
would then take the instance out. This connection is opened on the first
check, reused, and reopened when it broke (the server closed it, a check
timed out on it). One check runs at a time and callers arriving meanwhile
share its answer, so a flood of ``/healthz`` costs one round trip at a time
and never two statements on the connection at once.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from storage.errors import StorageUnavailable

# What PostgreSQL gets to answer one check in, connecting included.
HEALTH_TIMEOUT_SECONDS = 2.0
# (InternalClientError: what a kept connection the server terminated while idle may raise on its next query,
# "cannot switch to state 12; another operation is in progress", instead of a connection error.)
CONNECT_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, TimeoutError)
# What a kept connection raises once the server has closed it: worth one more try on a fresh one.
BROKEN_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


class HealthConnection:
    """``ping`` answers whether PostgreSQL does, whatever the pool's load."""

    def __init__(
        self, dsn: str, *, timeout: float = HEALTH_TIMEOUT_SECONDS, application_name: str = "portraits-health"
    ) -> None:
        self._dsn = dsn
        self._timeout = timeout
        self._application_name = application_name
        self._connection: asyncpg.Connection | None = None
        self._check: asyncio.Task[None] | None = None  # the round trip in flight, shared by its callers
        self._closed = False

    async def ping(self) -> None:
        """One ``SELECT 1`` within the timeout; ``StorageUnavailable`` when PostgreSQL does not answer."""
        if self._closed:
            raise StorageUnavailable("the health connection is closed")
        check = self._check
        if check is None:
            check = self._check = asyncio.create_task(self._round_trip(), name="health-check")
            check.add_done_callback(self._finished)
        await asyncio.shield(check)  # a caller that goes away does not cancel the others' answer

    async def close(self) -> None:
        """Stop checking and close the connection (the app's lifespan, at shutdown)."""
        self._closed = True
        if (check := self._check) is not None:
            check.cancel()
            with contextlib.suppress(asyncio.CancelledError, StorageUnavailable):
                await check
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await connection.close(timeout=self._timeout)
            except CONNECT_ERRORS:
                connection.terminate()

    def _finished(self, check: asyncio.Task[None]) -> None:
        if self._check is check:
            self._check = None
        if not check.cancelled():
            check.exception()  # marked as retrieved: every caller may have gone before it ended

    async def _round_trip(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._select_one()
        except CONNECT_ERRORS as error:
            self._drop()  # a timed-out connection may still owe an answer: never reuse it
            raise StorageUnavailable(f"PostgreSQL does not answer: {error or type(error).__name__}") from error

    async def _select_one(self) -> None:
        connection = self._connection
        if connection is not None and not connection.is_closed():
            try:
                await connection.fetchval("SELECT 1")
                return
            except BROKEN_ERRORS:
                self._drop()  # closed since the last check, e.g. by pg_terminate_backend: try a fresh one
        self._connection = await asyncpg.connect(
            self._dsn, timeout=self._timeout, server_settings={"application_name": self._application_name}
        )
        await self._connection.fetchval("SELECT 1")

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.terminate()
