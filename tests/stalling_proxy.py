"""A TCP hop to an HTTP server that holds some requests forever, to catch a client in the middle of a step.

Requests pass through byte for byte, except those whose request line holds
``marker`` (a bucket's path on S3, say): the first ``let_through`` of them
go on, and from then on each is held, unforwarded and unanswered, and
``stalled`` is set. So a test knows its client (a worker process) is inside
that step, and can kill it there. Clients that send one request at a time
per connection (aiobotocore's) start every request in a fresh read.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

HTTP_METHODS = (b"GET ", b"PUT ", b"POST ", b"HEAD ", b"DELETE ")


class StallingProxy:
    def __init__(self, target: tuple[str, int], marker: bytes, *, let_through: int = 0) -> None:
        self.target = target
        self.marker = marker
        self.let_through = let_through
        self.passed = 0  # marked requests forwarded
        self.held = 0  # marked requests held
        self.stalled = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> StallingProxy:
        self._server = await asyncio.start_server(self._carry, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _carry(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._writers.update((client_writer, upstream_writer))
        back = asyncio.create_task(self._pipe(upstream_reader, client_writer))
        self._tasks.add(back)
        back.add_done_callback(self._tasks.discard)
        try:
            while chunk := await client_reader.read(65536):
                if self._holds(chunk):
                    await client_reader.read()  # held: read what the client sends until it goes, forward nothing
                    return
                upstream_writer.write(chunk)
                await upstream_writer.drain()
        except ConnectionError:
            pass
        finally:
            for writer in (upstream_writer, client_writer):
                writer.close()
                self._writers.discard(writer)

    def _holds(self, chunk: bytes) -> bool:
        first_line = chunk.split(b"\r\n", 1)[0]
        if not first_line.startswith(HTTP_METHODS) or self.marker not in first_line:
            return False
        if self.passed < self.let_through:
            self.passed += 1
            return False
        self.held += 1
        self.stalled.set()
        return True

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()
