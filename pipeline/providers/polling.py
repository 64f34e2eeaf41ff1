"""How a remote provider waits on a request it submitted: pauses a webhook can cut short, and status reads that ride
out a few transient failures in a row. fal and Replicate wait the same way (pipeline/providers/fal.py, replicate.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from pipeline.providers.deadline import Deadline
from pipeline.providers.interface import ProviderError
from pipeline.wakeups import Watch

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Polling:
    # After a failed call, and between status reads without a webhook.
    poll_interval: float
    # Between status reads of a request whose webhook will say when it is done (the slower one, then).
    status_interval: float
    # Transient failures in a row a status read tolerates before it fails (retryable) itself.
    max_errors: int

    async def pause(self, deadline: Deadline, what: str, watch: Watch | None = None) -> None:
        """Between status reads (``watch``): the status interval, cut short by a webhook; after an error: the poll
        interval. Past the deadline: its retryable timeout."""
        remaining = deadline.remaining()
        if remaining <= 0:
            raise deadline.exceeded(what)
        if watch is None:
            await asyncio.sleep(min(self.poll_interval, remaining))
        elif await watch.wait(min(self.status_interval, remaining)):
            logger.debug("%s: woken by its webhook", what)

    async def patiently(self, read: Callable[[], Awaitable[T]], *, what: str, deadline: Deadline) -> T:
        """``read()``, again after each retryable ``ProviderError`` up to ``max_errors`` in a row."""
        failures = 0
        while True:
            try:
                return await read()
            except ProviderError as exc:
                if not exc.retryable:
                    raise
                if deadline.remaining() <= 0:
                    raise deadline.exceeded(what) from exc
                failures += 1
                if failures > self.max_errors:
                    raise ProviderError(f"{exc.message} ({failures} failures in a row)", retryable=True) from exc
                logger.warning("%s (failure %d, retrying)", exc.message, failures)
                await self.pause(deadline, what)
