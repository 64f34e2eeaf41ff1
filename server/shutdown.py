"""What the app does when `serve` is told to stop, before uvicorn closes its connections.

uvicorn's graceful shutdown closes the listening socket, lets HTTP requests
in flight finish, closes every websocket with 1012, and only then runs the
lifespan's shutdown. By then a subscriber has lost its socket without the
``SERVICE_UNAVAILABLE`` message, and a running job's grace period has not
even begun. So the app registers steps here while it starts, and the server
(``server/cli.py:PortraitsServer``) runs them first: the steps that must end
before connections close (the websockets' messages) are awaited, with a
bound; the others (the in-process workers winding down) start now and are
awaited by the lifespan, in parallel with uvicorn's drain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

Step = Callable[[], Awaitable[None]]


class Draining:
    """Steps to run when the server begins to stop; registered by the app's lifespan."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Step, bool]] = []
        self._started: list[asyncio.Task[None]] = []
        self.begun = False

    def add(self, name: str, step: Step, *, before_close: bool) -> None:
        """Run ``step`` when stopping; ``before_close``: connections stay open until it ends (or the bound)."""
        self._steps.append((name, step, before_close))

    async def begin(self, timeout: float) -> None:
        """Start every step; wait at most ``timeout`` seconds for those that must end before connections close."""
        if self.begun:
            return
        self.begun = True
        waited: list[asyncio.Task[None]] = []
        for name, step, before_close in self._steps:
            task = asyncio.create_task(_run(name, step), name=f"draining: {name}")
            self._started.append(task)
            if before_close:
                waited.append(task)
        if waited:
            _, late = await asyncio.wait(waited, timeout=timeout)
            for task in late:
                logger.warning("shutting down: %s did not end within %.1f s; going on", task.get_name(), timeout)


async def _run(name: str, step: Step) -> None:
    try:
        await step()
    except Exception:
        logger.exception("shutting down: %s failed", name)
