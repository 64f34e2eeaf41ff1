"""broadcaster's ``Broadcast`` with subscribers that take events at once instead of queueing them.

``Broadcast.subscribe`` gives every subscriber an unbounded ``asyncio.Queue``
(~3 KB each, empty) that a task of the subscriber's must drain. The hub
(realtime/event_hub.py) needs neither: its per-user feed hands each event to
bounded mailboxes right away. So ``attach`` registers any object with an
``async put(event)`` in the same channel table ``Broadcast``'s listener task
fans out from, on the same backend: the fan-out is still broadcaster's.

Written against broadcaster 0.3.x (its listener calls ``put`` on each
subscriber of ``_subscribers[event.channel]``); pyproject pins <0.4.
"""

from __future__ import annotations

from typing import Protocol

from broadcaster import Broadcast, Event


class Sink(Protocol):
    async def put(self, event: Event | None) -> None:
        """Take one event (None: the subscription ended); must not wait on anything slow."""


class SinkBroadcast(Broadcast):
    async def attach(self, channel: str, sink: Sink) -> None:
        """Deliver ``channel``'s events to ``sink`` until ``detach``; the backend subscribes on the first sink."""
        sinks = self._subscribers.get(channel)
        if sinks:
            sinks.add(sink)  # type: ignore[arg-type]  # a Sink quacks like the queues kept there
            return
        # Registered before the backend call, so a second attach meanwhile joins
        # instead of subscribing again (Broadcast.subscribe would replace it).
        self._subscribers[channel] = {sink}  # type: ignore[arg-type]
        try:
            await self._backend.subscribe(channel)
        except BaseException:
            self._subscribers.pop(channel, None)
            raise

    async def detach(self, channel: str, sink: Sink) -> None:
        sinks = self._subscribers.get(channel)
        if sinks is None:
            return
        sinks.discard(sink)  # type: ignore[arg-type]
        if not sinks:
            del self._subscribers[channel]
            await self._backend.unsubscribe(channel)
