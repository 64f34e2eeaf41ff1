"""pipeline/wakeups.py: a webhook's wake reaches the poll waiting on its request, even one between two waits."""

from __future__ import annotations

import asyncio
import time

from pipeline.wakeups import EVERYONE, Wakeups, wakeup_key


async def test_a_wake_cuts_a_wait_short_and_one_between_waits_is_kept() -> None:
    """Given a poll watching its request, when a wake comes during a wait, then the wait ends at once; when one
    comes between two waits (a status call under way), then the next wait returns at once; then waits are full."""
    wakeups = Wakeups()
    with wakeups.watch("fal", "r1") as watch:
        waiting = asyncio.create_task(watch.wait(30))
        await asyncio.sleep(0.01)
        assert wakeups.wake(wakeup_key("fal", "r1")) is True
        assert await asyncio.wait_for(waiting, 1) is True

        assert wakeups.wake("fal:r1") is True  # while no wait is under way
        assert await asyncio.wait_for(watch.wait(30), 1) is True

        started = time.monotonic()
        assert await watch.wait(0.05) is False  # nothing pending: the full wait
        assert time.monotonic() - started >= 0.04


async def test_wakes_for_requests_no_one_here_waits_on_are_dropped() -> None:
    """Given watches on two requests, when a wake names another request or provider, then nothing is woken; when
    the watch ended, then its request's wake finds no one; EVERYONE wakes every watch."""
    wakeups = Wakeups()
    with wakeups.watch("fal", "r1") as one, wakeups.watch("replicate", "r2") as two:
        assert wakeups.wake("fal:r2") is False
        assert wakeups.wake("replicate:r1") is False
        assert wakeups.watched == 2
        assert wakeups.wake(EVERYONE) is True
        assert await one.wait(0) is True and await two.wait(0) is True
    assert wakeups.watched == 0
    assert wakeups.wake("fal:r1") is False
    assert wakeups.wake(EVERYONE) is False
