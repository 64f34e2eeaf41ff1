"""Provider requests this process is waiting on, and the events that cut a wait short.

A provider's poll loop watches its request (``Wakeups.watch``) for as long as
it waits on it, and pauses with ``Watch.wait`` instead of sleeping. A verified
webhook (server/webhooks/) looks the request's job up and NOTIFYs the
workers' channel (pipeline/signals.py), whichever process the job runs in;
the process whose worker watches that request sets its event, and the poll
loop asks the provider at once. A wake that comes between two waits (while a
status call is under way) is kept until the next wait, so none is lost.

A wake says only "ask now": the provider is asked for the status and the
result as without webhooks, and nothing in the webhook's body is used.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

# NOTIFY payloads name the provider and its request id: "fal:<request id>".
SEPARATOR = ":"
# Wakes every watch: after the LISTEN connection was lost a while, since a notification sent meanwhile is lost.
EVERYONE = "*"


def wakeup_key(provider: str, request_id: str) -> str:
    return f"{provider}{SEPARATOR}{request_id}"


class Watch:
    """One provider request being waited on."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (at once) when a wake came since the last wait."""
        if not self.event.is_set():
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that lands as the
            # event is set, and a worker stopping would then wait on until the next pause.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(seconds, 0.0)):
                    await self.event.wait()
        woken = self.event.is_set()
        self.event.clear()
        return woken


class Wakeups:
    """The requests this process's workers are waiting on (one per process, shared by its providers and workers)."""

    def __init__(self) -> None:
        self._watches: dict[str, Watch] = {}
        self.woken = 0  # wakes that found a waiter, for the tests and the log

    @contextlib.contextmanager
    def watch(self, provider: str, request_id: str) -> Iterator[Watch]:
        key = wakeup_key(provider, request_id)
        watch = self._watches.setdefault(key, Watch())
        try:
            yield watch
        finally:
            if self._watches.get(key) is watch:
                del self._watches[key]

    def wake(self, key: str) -> bool:
        """Wake whoever waits on ``key`` (a NOTIFY payload; EVERYONE: all); False when no one here does."""
        if key == EVERYONE:
            for each in self._watches.values():
                each.event.set()
            return bool(self._watches)
        watch = self._watches.get(key)
        if watch is None:
            return False
        watch.event.set()
        self.woken += 1
        return True

    @property
    def watched(self) -> int:
        return len(self._watches)
