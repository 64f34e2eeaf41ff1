"""The serve process's paced garbage collection: survivors are frozen; frozen cycles are freed once the heap grew over its low."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref

from server.gc_pacer import GcPacer


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def is_frozen(thing: object) -> bool:
    """Tracked by the collector but in none of its generations: frozen (gc.get_objects leaves the frozen out)."""
    return gc.is_tracked(thing) and not any(other is thing for other in gc.get_objects())


async def test_a_frozen_cycle_waits_while_the_heap_is_steady_and_is_freed_once_it_grew() -> None:
    # given a pacer stepped by hand (its own loop would wait an hour)
    pacer = GcPacer(freeze_seconds=3600, full_collect_growth=0.25)
    pacer.start()
    try:
        # when a reference cycle survives a step, then it is frozen
        first, second = Node(), Node()
        first.other, second.other = second, first
        pacer.tick()
        assert is_frozen(first) and is_frozen(second)
        # and when nothing refers to it any more (reference counting alone cannot free a cycle)
        probe = weakref.ref(first)
        del first, second
        # then steps with a steady heap leave it (no full collection: nothing grew)
        pacer.tick()
        pacer.tick()
        assert probe() is not None
        assert pacer.full_collections == 0
        # but once the heap has grown by the share, the next step collects everything and frees it
        ballast = [object() for _ in range(int(sys.getallocatedblocks() * 0.3))]
        pacer.tick()
        assert pacer.full_collections == 1
        assert probe() is None
        del ballast
    finally:
        await pacer.stop()
    assert gc.get_freeze_count() == 0


async def test_growth_counts_from_the_heaps_low_so_churn_gets_collected() -> None:
    # given a heap that was larger when the pacer started (sockets open) than it is now (they closed)
    held = [object() for _ in range(int(sys.getallocatedblocks() * 0.5))]
    pacer = GcPacer(freeze_seconds=3600, full_collect_growth=0.25)
    pacer.start()
    try:
        first, second = Node(), Node()
        first.other, second.other = second, first
        pacer.tick()
        probe = weakref.ref(first)
        del first, second, held
        pacer.tick()  # the low: what is left after the closes, the frozen cycle included
        assert probe() is not None and pacer.full_collections == 0
        # when the heap grows back by the share over that low, though not to where it was
        ballast = [object() for _ in range(int(sys.getallocatedblocks() * 0.3))]
        pacer.tick()
        # then the frozen cycle is collected
        assert pacer.full_collections == 1
        assert probe() is None
        del ballast
    finally:
        await pacer.stop()


async def test_the_running_pacer_freezes_survivors() -> None:
    pacer = GcPacer(freeze_seconds=0.01)
    pacer.start()
    try:
        survivor = Node()
        survivor.other = survivor
        async with asyncio.timeout(10):
            while not is_frozen(survivor):
                await asyncio.sleep(0.02)
    finally:
        await pacer.stop()
    assert not is_frozen(survivor)  # stop unfreezes everything
