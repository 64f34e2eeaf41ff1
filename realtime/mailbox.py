"""A subscription's mailbox: the change notices it has not yet taken, coalesced per row and bounded.

A subscriber re-reads rows, so only "this row changed" matters, never how
many times: notices for the same row fold into the latest. A mailbox that
holds more distinct rows than it may, or has held rows untaken for too long,
fails with ``MailboxOverflow`` (resolvers turn it into the client's
SUBSCRIBER_TOO_SLOW). So a slow client costs a bounded amount of memory
however many events it misses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from realtime.change_events import ChangeNotice


class MailboxOverflow(Exception):
    """The mailbox's owner fell too far behind its events; its subscription ends."""


class FeedClosed(Exception):
    """The server is shutting down, or events cannot be received at all."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a mailbox held: the rows that changed (one notice per row, the latest) and whether to re-read everything."""

    resync: bool
    notices: tuple[ChangeNotice, ...]


NoticeFilter = Callable[[ChangeNotice], bool]


class Mailbox:
    """One subscription's changes to re-read; filled by the hub's router, taken by the subscription's own task."""

    __slots__ = ("_accepts", "_failure", "_max_lag", "_max_pending", "_oldest", "_pending", "_resync", "_waiter")

    def __init__(self, accepts: NoticeFilter, *, max_pending: int, max_lag_seconds: float) -> None:
        self._accepts = accepts
        self._max_pending = max_pending
        self._max_lag = max_lag_seconds
        self._pending: dict[tuple[str, UUID], ChangeNotice] = {}
        self._oldest = 0.0
        self._resync = False
        self._failure: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    def offer(self, notice: ChangeNotice) -> None:
        """Keep ``notice`` if the filter accepts it (folded into the row's earlier one); overflowing fails the box."""
        if self._failure is not None or not self._accepts(notice):
            return
        key = (notice.kind, notice.id)
        pending = self._pending
        if key not in pending:
            if not pending:
                self._oldest = time.monotonic()
            elif len(pending) >= self._max_pending:
                self.fail(MailboxOverflow(f"more than {self._max_pending} changes are waiting to be sent"))
                return
            elif time.monotonic() - self._oldest > self._max_lag:
                self.fail(MailboxOverflow(f"changes have waited more than {self._max_lag:g} s to be sent"))
                return
        pending[key] = notice
        self._wake()

    def resync(self) -> None:
        """Events may have been lost: the next delivery says re-read everything."""
        if self._failure is None:
            self._resync = True
            self._wake()

    def fail(self, error: Exception) -> None:
        """End the mailbox: ``next`` raises ``error`` from now on, and what was pending is dropped."""
        if self._failure is None:
            self._failure = error
            self._pending = {}
            self._wake()

    async def next(self) -> Delivery:
        """Wait for something to re-read; ``MailboxOverflow`` or ``FeedClosed`` when the subscription must end."""
        while True:
            if self._failure is not None:
                raise self._failure
            if self._pending or self._resync:
                delivery = Delivery(resync=self._resync, notices=tuple(self._pending.values()))
                self._pending = {}
                self._resync = False
                return delivery
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
