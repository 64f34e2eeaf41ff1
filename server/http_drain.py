"""Graceful shutdown for HTTP connections that are idle when it begins: a request already sent is still answered.

uvicorn's httptools protocol, told to shut down, closes at once a connection
with no request in progress. But such a connection may hold a request the
event loop has not read yet: bytes in the socket's receive buffer, sent
before the signal, read on the loop's next turn. Closing it then resets the
connection (unread data makes the kernel send RST), and the client gets no
answer at all. So an idle connection is kept ``IDLE_GRACE_SECONDS`` longer:
a request that arrives meanwhile is served and answered with
``Connection: close``; a connection still idle then is closed, as before.
A request in progress is finished and its connection closed (uvicorn's own
behaviour).
"""

from __future__ import annotations

import asyncio

# uvicorn names its protocol classes only as strings of uvicorn.Config (http="httptools"); the module is not
# public API. uvicorn is pinned to 0.54.x, and tests/test_library_overrides.py fails when the methods we
# override change.
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# How long an idle connection may still bring a request once shutdown begins: requests sent before the signal
# are in the receive buffer or on their way (a loop turn, a network round trip), well within it.
IDLE_GRACE_SECONDS = 1.0


class DrainOnShutdown(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering a request that reaches an idle connection as shutdown begins."""

    draining = False
    head_begun = False  # a request's first bytes have come, its head is not complete
    drain_timer: asyncio.TimerHandle | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_begun = True

    def on_headers_complete(self) -> None:
        self.head_begun = False
        super().on_headers_complete()
        if self.draining and self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # answered with Connection: close, then closed

    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.draining = True
            self.drain_timer = self.loop.call_later(IDLE_GRACE_SECONDS, self.close_if_idle)
        else:
            super().shutdown()  # the response in progress ends with Connection: close

    def close_if_idle(self) -> None:
        self.drain_timer = None
        if (self.cycle is None or self.cycle.response_complete) and not self.head_begun:
            self.transport.close()
        # A head under way is bounded by the connection guard's header deadline, the whole drain by uvicorn's
        # timeout_graceful_shutdown.

    def connection_lost(self, exc: Exception | None) -> None:
        if self.drain_timer is not None:
            self.drain_timer.cancel()
            self.drain_timer = None
        super().connection_lost(exc)


def drain_on_shutdown(protocol: type[HttpToolsProtocol]) -> type[HttpToolsProtocol]:
    """For ``uvicorn.Config(http=...)``: ``protocol`` (an httptools protocol class) with the drain above."""
    return type(f"Draining{protocol.__name__}", (DrainOnShutdown, protocol), {})
