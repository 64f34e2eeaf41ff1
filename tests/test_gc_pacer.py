"""The serve process's paced garbage collection.

Survivors are frozen; frozen cycles are freed once enough sockets closed or the heap grew.
"""

from __future__ import annotations

import asyncio
import gc
import platform
import sys
import weakref
from collections.abc import AsyncIterator, Callable

import pytest

from server.free_memory import malloc_trim
from server.gc_pacer import GcPacer
from server.websocket import SocketTally


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def is_frozen(thing: object) -> bool:
    """Tracked by the collector but in none of its generations: frozen (gc.get_objects leaves the frozen out)."""
    return gc.is_tracked(thing) and not any(other is thing for other in gc.get_objects())


def frozen_garbage_cycle(pacer: GcPacer) -> Callable[[], Node | None]:
    """A reference cycle that survives a step (so it is frozen), then is dropped; a probe says if it is still there."""
    first, second = Node(), Node()
    first.other, second.other = second, first
    pacer.tick()
    assert is_frozen(first) and is_frozen(second)
    return weakref.ref(first)  # and nothing else refers to them: reference counting alone cannot free a cycle


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., GcPacer]]:
    """Start pacers stepped by hand (their own loops would wait an hour); stopped at the end."""
    pacers: list[GcPacer] = []

    def start(
        sockets: SocketTally,
        *,
        min_closed_sockets: int = 1000,
        growth_check_seconds: float = 3600,
        growth_share: float = 0.1,
        release_memory: Callable[[], None] | None = None,
    ) -> GcPacer:
        pacer = GcPacer(
            sockets,
            freeze_seconds=3600,
            min_closed_sockets=min_closed_sockets,
            growth_check_seconds=growth_check_seconds,
            growth_share=growth_share,
            release_memory=release_memory,
        )
        pacer.start()
        pacers.append(pacer)
        return pacer

    yield start
    for pacer in pacers:
        await pacer.stop()
    assert gc.get_freeze_count() == 0


async def test_a_frozen_cycle_waits_until_as_many_sockets_closed_as_are_open(started: Callable[..., GcPacer]) -> None:
    # given 3,000 open sockets
    sockets = SocketTally(opened=3000)
    pacer = started(sockets, min_closed_sockets=1000, growth_check_seconds=3600)
    full = pacer.full_collections
    probe = frozen_garbage_cycle(pacer)
    # when 1,200 close (fewer than the 1,800 left open), then steps leave the frozen cycle alone
    sockets.closed = 1200
    pacer.tick()
    assert probe() is not None and pacer.full_collections == full
    # and when 1,500 have closed, as many as are open, then the next step collects everything and frees it
    sockets.closed = 1500
    pacer.tick()
    assert pacer.full_collections == full + 1
    assert probe() is None
    # and the count starts again from there
    sockets.closed = 2200
    pacer.tick()
    assert pacer.full_collections == full + 1


async def test_with_few_sockets_it_waits_for_the_minimum(started: Callable[..., GcPacer]) -> None:
    sockets = SocketTally(opened=10)
    pacer = started(sockets, min_closed_sockets=1000, growth_check_seconds=3600)
    full = pacer.full_collections
    sockets.closed = 10
    pacer.tick()
    assert pacer.full_collections == full
    sockets.opened = sockets.closed = 1000
    pacer.tick()
    assert pacer.full_collections == full + 1


async def test_a_heap_grown_over_its_low_is_collected_at_the_growth_check(started: Callable[..., GcPacer]) -> None:
    # given a heap that was larger when the pacer started than it is now
    held = [object() for _ in range(int(sys.getallocatedblocks() * 0.5))]
    pacer = started(SocketTally(), growth_check_seconds=0, growth_share=0.25)
    full = pacer.full_collections
    probe = frozen_garbage_cycle(pacer)
    del held
    pacer.tick()  # its low: what is left, the frozen cycle included
    assert probe() is not None and pacer.full_collections == full
    # when it grows by the share over that low, though not back to where it was
    ballast = [object() for _ in range(int(sys.getallocatedblocks() * 0.3))]
    pacer.tick()
    # then the check collects everything: the frozen cycle is freed
    assert pacer.full_collections == full + 1
    assert probe() is None
    del ballast


async def test_growth_is_checked_only_every_growth_check_seconds(started: Callable[..., GcPacer]) -> None:
    pacer = started(SocketTally(), growth_check_seconds=3600, growth_share=0.25)
    full = pacer.full_collections
    probe = frozen_garbage_cycle(pacer)
    ballast = [object() for _ in range(int(sys.getallocatedblocks() * 0.3))]
    pacer.tick()
    assert probe() is not None and pacer.full_collections == full
    del ballast


async def test_each_full_collection_gives_free_heap_memory_back(started: Callable[..., GcPacer]) -> None:
    # given a pacer whose memory releases are counted (one full collection at start)
    releases: list[str] = []
    sockets = SocketTally()
    pacer = started(sockets, release_memory=lambda: releases.append("released"))
    assert (pacer.full_collections, len(releases)) == (1, 1)
    # when enough sockets close for another full collection, and then a tick with none due
    sockets.opened = sockets.closed = 1000
    pacer.tick()
    pacer.tick()
    # then memory was released after the full collection, and only then
    assert (pacer.full_collections, len(releases)) == (2, 2)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_malloc_trim_is_found_and_runs_on_glibc() -> None:
    # given glibc (CI's and the Docker image's C library), when its free memory is released
    release = malloc_trim()
    # then the function was found, and runs
    assert release is not None
    release()


async def test_the_running_pacer_freezes_survivors() -> None:
    pacer = GcPacer(SocketTally(), freeze_seconds=0.01)
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


async def test_young_collections_are_paced_while_started_and_as_before_after() -> None:
    # given the interpreter's thresholds before a pacer starts
    before = gc.get_threshold()
    pacer = GcPacer(SocketTally(), freeze_seconds=3600, young_threshold=before[0] + 1234)

    # when it starts, then stops
    pacer.start()
    while_started = gc.get_threshold()
    await pacer.stop()

    # then only the young generation's threshold was its own, and only while started
    assert while_started == (before[0] + 1234, *before[1:])
    assert gc.get_threshold() == before


async def test_a_pacer_started_twice_refuses_and_still_gives_the_thresholds_back() -> None:
    # given a started pacer
    before = gc.get_threshold()
    pacer = GcPacer(SocketTally(), freeze_seconds=3600, young_threshold=before[0] + 1234)
    pacer.start()

    # when it is started again, then stopped
    with pytest.raises(RuntimeError):
        pacer.start()
    await pacer.stop()

    # then the interpreter's thresholds are those from before the first start
    assert gc.get_threshold() == before
