"""Keeps the embedded PostgreSQL running under its owner, or says it cannot.

Before, a postmaster that died (killed, out of memory) stayed an unreaped
zombie and ``serve`` answered 503 for ever. The supervisor waits on it from a
thread of its own: when it exits, it is reaped at once, started again after a
backoff (0.5 s, doubling to 10 s), and when more than ``max_restarts`` starts
fall within ``window_seconds`` it stops trying and calls ``on_give_up`` with
a message that says what happened, so the owner exits non-zero instead of
serving errors. Connections to the old server break; their owners (the pool,
the LISTEN and health connections) reconnect on their own.

The restarted postmaster is spawned by this thread, and Linux sends a child's
parent-death signal when the thread that spawned it ends, not the process:
so the thread lives until the server is stopped for good (``close``), blocked
in ``wait_for_exit`` on the postmaster it started.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from devtools.embedded_postgres import EmbeddedPostgres, EmbeddedPostgresError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How often the embedded PostgreSQL is started again before its owner gives up (README: Settings)."""

    # Starts allowed within the window; one more needed means giving up. 0: give up at the first exit.
    max_restarts: int = 5
    window_seconds: float = 300.0
    # The wait before the n-th start within the window: first_delay * 2 ** (n - 1), at most max_delay.
    first_delay: float = 0.5
    max_delay: float = 10.0

    def delay(self, recent_starts: int) -> float:
        return min(self.max_delay, self.first_delay * 2.0**recent_starts)


class EmbeddedSupervisor:
    """Watches one ``EmbeddedPostgres`` from a daemon thread: reap, restart with backoff, give up past the bound."""

    def __init__(
        self,
        embedded: EmbeddedPostgres,
        policy: RestartPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.embedded = embedded
        self.policy = policy
        self._clock = clock
        self._starts: deque[float] = deque()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: str | None = None  # why it gave up, once it has

    def start(self, on_give_up: Callable[[str], None]) -> None:
        """Begin watching; ``on_give_up(message)`` is called from the watching thread, once, if it gives up."""
        self._thread = threading.Thread(
            target=self._watch, args=(on_give_up,), name="embedded-postgres-supervisor", daemon=True
        )
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """No restart from now on; stop the server (fast shutdown), and the watching thread with it."""
        self._closed.set()
        self.embedded.stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def _watch(self, on_give_up: Callable[[str], None]) -> None:
        while not self._closed.is_set():
            pid = self.embedded.pid
            code = self.embedded.wait_for_exit()  # reaps it: no zombie, whatever comes next
            if code is None or self._closed.is_set():
                return  # its owner stopped it
            logger.error("the embedded PostgreSQL (pid %s) exited with code %d; starting it again", pid, code)
            try:
                failure = self._restart(code)
            except Exception as error:  # never leave the owner serving errors for ever with nobody watching
                logger.exception("the embedded PostgreSQL's supervisor failed")
                failure = f"the embedded PostgreSQL in {self.embedded.pgdata} stopped and its restart failed: {error!r}"
            if failure is not None:
                self.failure = failure
                logger.critical("%s", failure)
                on_give_up(failure)
                return

    def _restart(self, code: int) -> str | None:
        """Start it again, with backoff, until it runs (None), or the bound is passed (why, as a message)."""
        down_since = self._clock()
        last_error = f"it exited with code {code}"
        while True:
            now = self._clock()
            while self._starts and now - self._starts[0] > self.policy.window_seconds:
                self._starts.popleft()
            if len(self._starts) >= self.policy.max_restarts:
                return (
                    f"the embedded PostgreSQL in {self.embedded.pgdata} stopped and {len(self._starts)} restart(s) "
                    f"within {self.policy.window_seconds:g} s did not keep it running "
                    f"(EMBEDDED_POSTGRES_MAX_RESTARTS={self.policy.max_restarts}); giving up. Last: {last_error}"
                )
            if self._closed.wait(self.policy.delay(len(self._starts))):
                return None
            self._starts.append(self._clock())
            try:
                server = self.embedded.restart()
            except EmbeddedPostgresError as error:
                if self._closed.is_set():
                    return None
                last_error = str(error)
                logger.error("starting the embedded PostgreSQL again failed: %s", error)
                continue
            logger.warning(
                "the embedded PostgreSQL runs again (pid %d), %.1f s after it stopped; restart %d of at most %d "
                "within %g s",
                server.pid, self._clock() - down_since, len(self._starts), self.policy.max_restarts,
                self.policy.window_seconds,
            )
            return None
