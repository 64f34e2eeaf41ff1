"""Keep Python's full garbage collections from stalling a server that holds many subscriptions.

Each idle subscriber is ~300 long-lived Python objects (socket, handler,
tasks, generators). A full collection walks every tracked object: at 10,000
subscribers that is ~3 million objects and a 2.4 s stall of the whole
process, which decides the p99 of event delivery (bench/subscriptions.py).

So ``serve`` freezes what has survived (``gc.freeze()`` moves it to a
generation the collector never walks) right after start-up and then every
``FREEZE_SECONDS``, after a young collection so that fresh garbage is freed
rather than frozen. Full collections then only walk what is newer than the
last freeze. Frozen objects are still freed by reference counting; only a
reference cycle among them would outlive its use, so once every
``FULL_COLLECT_SECONDS`` everything is unfrozen and collected once (a stall,
but an hourly one, not one per burst of connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time

logger = logging.getLogger(__name__)

FREEZE_SECONDS = 1.0
FULL_COLLECT_SECONDS = 3600.0


class GcPacer:
    def __init__(self, *, freeze_seconds: float = FREEZE_SECONDS, full_collect_seconds: float = FULL_COLLECT_SECONDS) -> None:
        self._freeze_seconds = freeze_seconds
        self._full_collect_seconds = full_collect_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gc-pacer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        gc.unfreeze()

    async def _run(self) -> None:
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(self._freeze_seconds)
            if time.monotonic() - last_full >= self._full_collect_seconds:
                started = time.perf_counter()
                gc.unfreeze()
                freed = gc.collect()
                gc.freeze()
                last_full = time.monotonic()
                logger.info("full garbage collection: %d objects freed in %.0f ms", freed, (time.perf_counter() - started) * 1000)
                continue
            gc.collect(1)
            gc.freeze()
