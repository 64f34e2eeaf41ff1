"""Keep Python's full garbage collections from stalling a server that holds many subscriptions, without keeping garbage.

Each idle subscriber is a few hundred long-lived Python objects (socket,
protocol, handler, tasks). A full collection walks every tracked object: at
10,000 subscribers that is a stall of 2-3 s for the whole process, which
decides the p99 of event delivery (bench/subscriptions.py). CPython starts
one whenever the objects promoted to the oldest generation since the last
one reach a quarter of it. Unpaced, 10,000 subscribers connecting got 12
(0.1 s to 1.6 s each, each freeing under 2,000 objects: a growing
population makes no garbage), then two more of 2.2 s during the update
rounds after (p99 of 4-6 s there, 10-12 ms paced); and idle subscribers keep
promoting, since each socket's keepalive timer lives 20 s (500 promoted
timers a second at 10,000: a stall about every half hour by that alone).

So ``serve`` freezes what has survived (``gc.freeze()`` moves it where the
collector never walks) after start-up and then every ``FREEZE_SECONDS``,
after a young collection so that fresh garbage is freed rather than frozen.
Frozen objects are still freed by reference counting, but a reference cycle
among them is not, and garbage in cycles comes mostly from closed sockets:
each leaves one (graphql-core's executor of its subscription) with what it
reaches, ~36 objects and ~5 KB (server/websocket.py cuts uvicorn's
connection loose from it). So the pacer runs a full collection (unfreeze,
collect, freeze) once as many GraphQL sockets have closed since the last as
are open now (and at least ``MIN_CLOSED_SOCKETS``): each costs in proportion
to the sockets it frees, and their cycles never hold more than ~5 KB per open
socket (or per 1,000 sockets, when fewer are open). For garbage from anything else (a request in flight when survivors
are frozen), every ``GROWTH_CHECK_SECONDS`` it also runs one if the memory
blocks the interpreter has allocated (``sys.getallocatedblocks()``, cheap to
read) have risen ``GROWTH_SHARE`` above their lowest since the last full
collection. That garbage is real: a parsed document is a cycle (graphql-core's
tokens link both ways), and one in flight when survivors are frozen stays
until the next full collection. Checked every 10 minutes, 1,500 hostile
requests left 94,000 such objects (286,000 memory blocks, a quarter of the
heap) frozen; so the check runs every minute, and a full collection comes
at the latest a minute after the garbage passes a tenth of the heap. After
each, free heap memory goes back to the system (``server/free_memory.py``).
A server whose population holds steady never stalls
(bench/socket_cycles.py shows RSS returning to its level, and the p99).

It also makes young collections rarer: CPython runs one each time the
tracked objects allocated (less those freed) pass 700 (its default through
3.13; 3.14's collector is incremental), and walks every young object still
alive, promoting the survivors to be walked again by the middle generation.
Under load the live ones are the requests in flight: serving bench/reads.py's
page to 16 connections, collections took 12% of the server's CPU at 700, 5%
at 5,000 and 3% at ``YOUNG_THRESHOLD`` (20,000), timed by ``gc.callbacks``;
in one process, 16 pages at once spent 120, 30, 25 and 57 µs per request
collecting at 700, 5,000, 20,000 and 100,000 (past 20,000 each walk outgrows
the CPU caches). The cyclic garbage a request leaves (about 35 objects: its
context and graphql-core's executor) waits at most that many allocations.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from collections.abc import Callable
from typing import Protocol

from server.free_memory import malloc_trim

logger = logging.getLogger(__name__)

FREEZE_SECONDS = 1.0
YOUNG_THRESHOLD = 20_000
MIN_CLOSED_SOCKETS = 1000
GROWTH_CHECK_SECONDS = 60.0
GROWTH_SHARE = 0.1


class SocketCount(Protocol):
    """How many sockets the process has opened and closed so far (server/websocket.py keeps the GraphQL ones)."""

    @property
    def opened(self) -> int: ...

    @property
    def closed(self) -> int: ...


def _nothing() -> None:
    """Where the C library cannot give memory back."""


class GcPacer:
    """Freezes survivors every ``freeze_seconds``; collects everything once enough sockets closed or the heap grew;
    runs young collections every ``young_threshold`` net allocations while started."""

    def __init__(
        self,
        sockets: SocketCount,
        *,
        freeze_seconds: float = FREEZE_SECONDS,
        min_closed_sockets: int = MIN_CLOSED_SOCKETS,
        growth_check_seconds: float = GROWTH_CHECK_SECONDS,
        growth_share: float = GROWTH_SHARE,
        young_threshold: int = YOUNG_THRESHOLD,
        release_memory: Callable[[], None] | None = None,
    ) -> None:
        self.sockets = sockets
        self.freeze_seconds = freeze_seconds
        self.min_closed_sockets = min_closed_sockets
        self.growth_check_seconds = growth_check_seconds
        self.growth_share = growth_share
        self.young_threshold = young_threshold
        self.release_memory = release_memory or malloc_trim() or _nothing
        self._thresholds_before: tuple[int, int, int] | None = None
        self.full_collections = 0  # since start, for logs and tests
        self._closed_at_full = 0  # sockets closed by the last full collection
        self._low_blocks = 0  # allocated blocks: their lowest since the last full collection
        self._growth_checked_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Call once start-up is done: what it made is frozen, young collections are paced, and the pacing starts."""
        if self._task is not None:
            raise RuntimeError("this GC pacer has already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gc-pacer")
        self._collect_everything("start-up")
        before = self._thresholds_before = gc.get_threshold()
        gc.set_threshold(self.young_threshold, *before[1:])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._thresholds_before is not None:
            gc.set_threshold(*self._thresholds_before)
            self._thresholds_before = None
        gc.unfreeze()

    def tick(self) -> None:
        """One pacing step: a full collection when one is due, else freeze the young survivors."""
        blocks = sys.getallocatedblocks()
        self._low_blocks = min(self._low_blocks, blocks)
        closed = self.sockets.closed - self._closed_at_full
        if closed >= max(self.min_closed_sockets, self.sockets.opened - self.sockets.closed):
            self._collect_everything(f"{closed} sockets closed")
            return
        now = time.monotonic()
        if now - self._growth_checked_at >= self.growth_check_seconds:
            self._growth_checked_at = now
            if blocks > self._low_blocks * (1 + self.growth_share):
                self._collect_everything(f"memory blocks {self._low_blocks} -> {blocks}")
                return
        gc.collect(1)
        gc.freeze()

    def _collect_everything(self, why: str) -> None:
        started = time.perf_counter()
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        self.release_memory()
        self._closed_at_full = self.sockets.closed
        self._low_blocks = sys.getallocatedblocks()
        self._growth_checked_at = time.monotonic()
        self.full_collections += 1
        logger.info(
            "full garbage collection (%s): %d objects in cycles freed in %.0f ms; %d memory blocks allocated",
            why, freed, (time.perf_counter() - started) * 1000, self._low_blocks,
        )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.freeze_seconds)
            self.tick()
