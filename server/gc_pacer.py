"""Keep Python's full garbage collections from stalling a server that holds many subscriptions, without keeping garbage.

Each idle subscriber is a few hundred long-lived Python objects (socket,
protocol, handler, tasks). A full collection walks every tracked object: at
10,000 subscribers that is millions of objects and a stall of seconds for the
whole process, which decides the p99 of event delivery
(bench/subscriptions.py). CPython starts one whenever the objects promoted to
the oldest generation since the last one reach a quarter of it, and idle
subscribers keep promoting: each socket's keepalive timer lives 20 s, 500
promoted timers a second at 10,000 subscribers, so even an idle server
would stall about every half hour (by that count alone) for nothing.

So ``serve`` freezes what has survived (``gc.freeze()`` moves it where the
collector never walks) after start-up and then every ``FREEZE_SECONDS``,
after a young collection so that fresh garbage is freed rather than frozen.
Frozen objects are still freed by reference counting, but a reference cycle
among them is not: each closed subscription socket leaves one (graphql-core's
executor of its subscription) with what it reaches, ~36 objects and ~5 KB
(server/websocket.py cuts uvicorn's connection loose from it). So once the
memory blocks the interpreter has allocated (``sys.getallocatedblocks()``,
cheap to read) have risen ``FULL_COLLECT_GROWTH`` above their lowest since
the last full collection, the pacer runs one (unfreeze, collect, freeze).
As with CPython's own rule, full collections cost in proportion to growth
(a ramp to 10,000 subscribers pays ~7 of them, 0.2-1.3 s each); unlike it,
what counts is memory still allocated, not objects ever promoted, so a
server whose population holds steady never stalls; and counting from the
low, sockets that close and are replaced by new ones get their cycles
collected, so RSS returns to its level (bench/socket_cycles.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time

logger = logging.getLogger(__name__)

FREEZE_SECONDS = 1.0
FULL_COLLECT_GROWTH = 0.25


class GcPacer:
    """Freezes survivors every ``freeze_seconds``; a full collection when allocated blocks rose ``full_collect_growth`` over their low."""

    def __init__(self, *, freeze_seconds: float = FREEZE_SECONDS, full_collect_growth: float = FULL_COLLECT_GROWTH) -> None:
        self.freeze_seconds = freeze_seconds
        self.full_collect_growth = full_collect_growth
        self.full_collections = 0  # since start, for logs and tests
        self._low_blocks = 0  # allocated blocks: their lowest since the last full collection
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Call once start-up is done: what it made is frozen, and the pacing starts."""
        gc.collect()
        gc.freeze()
        self._low_blocks = sys.getallocatedblocks()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gc-pacer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        gc.unfreeze()

    def tick(self) -> None:
        """One pacing step: a full collection if the heap grew enough over its low, else freeze the young survivors."""
        blocks = sys.getallocatedblocks()
        if blocks > self._low_blocks * (1 + self.full_collect_growth):
            self._collect_everything()
            return
        self._low_blocks = min(self._low_blocks, blocks)
        gc.collect(1)
        gc.freeze()

    def _collect_everything(self) -> None:
        started = time.perf_counter()
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        self._low_blocks = sys.getallocatedblocks()
        self.full_collections += 1
        logger.info(
            "full garbage collection: %d objects in cycles freed in %.0f ms; %d memory blocks allocated",
            freed, (time.perf_counter() - started) * 1000, self._low_blocks,
        )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.freeze_seconds)
            self.tick()
