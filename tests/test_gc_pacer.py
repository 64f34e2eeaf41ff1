"""The serve process's paced garbage collection: survivors are frozen, cycles among them still freed hourly."""

from __future__ import annotations

import asyncio
import gc
import weakref

from server.gc_pacer import GcPacer


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


async def test_survivors_are_frozen_and_a_full_collection_still_frees_frozen_cycles() -> None:
    # given a pacer freezing every 50 ms and collecting everything every second
    pacer = GcPacer(freeze_seconds=0.05, full_collect_seconds=1.0)
    pacer.start()
    try:
        frozen_at_start = gc.get_freeze_count()
        assert frozen_at_start > 0
        # when a reference cycle survives long enough to be frozen
        first, second = Node(), Node()
        first.other, second.other = second, first
        await asyncio.sleep(0.2)
        assert gc.get_freeze_count() > 0
        freed = asyncio.Event()
        probe = weakref.ref(first, lambda _: freed.set())
        # and then nothing refers to it any more (reference counting alone cannot free a cycle)
        del first, second
        await asyncio.sleep(0.1)
        assert probe() is not None
        # then the periodic full collection frees it
        await asyncio.wait_for(freed.wait(), 5)
    finally:
        await pacer.stop()
    assert gc.get_freeze_count() == 0
