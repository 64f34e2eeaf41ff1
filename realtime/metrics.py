"""What realtime reports to the process's metrics, as a Protocol: realtime never imports prometheus.

``server/metrics.py`` implements it; tests and tools that want no metrics pass ``NO_EVENT_METRICS``.
"""

from __future__ import annotations

from typing import Protocol


class EventMetrics(Protocol):
    def reconnected(self, connection: str) -> None:
        """A LISTEN or pub/sub connection (``events``, ``relay``, ``redis``) came back after a loss."""

    def resynced(self) -> None:
        """The hub told every subscription to re-read, as events may have been missed."""


class NoEventMetrics:
    """Records nothing."""

    def reconnected(self, connection: str) -> None:
        pass

    def resynced(self) -> None:
        pass


NO_EVENT_METRICS: EventMetrics = NoEventMetrics()
