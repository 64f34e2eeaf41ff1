"""What GraphQL reports to the process's metrics, as a Protocol: graph never imports prometheus.

server/metrics.py implements it and hands it to each request's ``Context``;
graph/operation_count.py counts through it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

# Outcomes: data without errors; data with errors (or none at all after execution began);
# a subscription that started (its events are not operations); a document refused before execution.
OK = "ok"
ERROR = "error"
SUBSCRIBED = "subscribed"
REFUSED = "refused"
# The operation label of an operation that validated without a name, and of one that did not validate: no GraphQL
# name can take these values, so a client's operation never merges with them (server/metrics.py's OTHER is the second).
ANONYMOUS = "<anonymous>"
UNNAMED_REFUSAL = "<other>"


class OperationMetrics(Protocol):
    def operation(self, name: str, operation_type: str, outcome: str) -> None:
        """One operation ended its execution (or was refused); ``name`` only of a validated operation."""

    def errors(self, codes: Iterable[str]) -> None:
        """The ``extensions.code`` of each error of a result."""


class NoOperationMetrics:
    """Records nothing (tests that build a Context by hand, tools)."""

    def operation(self, name: str, operation_type: str, outcome: str) -> None:
        pass

    def errors(self, codes: Iterable[str]) -> None:
        pass


NO_OPERATION_METRICS: OperationMetrics = NoOperationMetrics()
