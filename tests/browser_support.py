"""Headless Chromium for the tests that load pages as a browser app would (CORS, GraphiQL), every other host blocked.

The browser is the system's Chromium (Debian's ``chromium``, ``/usr/bin/chromium``; `.ci/run` installs it),
driven by Python ``playwright`` (the dev extra) through ``executable_path``: Playwright's own browser download
(``playwright install``) is never used. Where the executable is missing the test is skipped, saying so.

Nothing leaves the machine: Chromium's host resolver maps every name but ``127.0.0.1`` and ``localhost`` to
nothing (websockets included), and each page's failed requests to any other host are recorded in ``blocked``, so a
test can assert that a page fetched nothing from a CDN. Not Playwright's request routing (``route``): while any
route is set, Playwright answers every CORS preflight itself (204, allowing all), so the server's CORS would go
untested.

API:

- ``launch_chromium()``: an async context manager yielding a playwright ``Browser``.
- ``open_page(browser)``: an async context manager yielding a ``BrowserPage`` (a fresh context and page, with
  ``blocked`` requests, ``console`` lines and uncaught ``errors`` collected).
- fixtures ``chromium`` (one ``Browser`` per session) and ``chromium_page`` (a ``BrowserPage`` per test); import
  them into a test module (``from tests.browser_support import chromium, chromium_page``) to use them.
- ``serve_static(files)``: serves files over real HTTP on a free port of 127.0.0.1, a second origin for pages.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright
from playwright.async_api import Request as BrowserRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route as StarletteRoute

from tests.support import ServedUvicorn, free_port, serve_uvicorn

CHROMIUM = "/usr/bin/chromium"
# Hosts a page may reach: the test servers, all on this machine.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",  # the tests may run as root (CI), where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Below the page's own routing: every name but the local ones resolves to nothing, websockets included.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
)
# Bounds a page action or wait: the pages here do their work in well under a second.
DEFAULT_TIMEOUT_MS = 30_000


def chromium_or_skip() -> str:
    """The Chromium executable, or skip the test saying what is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it)")
    return CHROMIUM


@asynccontextmanager
async def launch_chromium() -> AsyncIterator[Browser]:
    """Headless Chromium, closed when the block ends; skips the test where it is not installed."""
    executable = chromium_or_skip()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class BrowserPage:
    """A page in a context of its own, with what it tried and said: read these when an assertion fails."""

    page: Page
    # URLs of requests to hosts other than 127.0.0.1/localhost (they fail: the names do not resolve).
    blocked: list[str] = field(default_factory=list)
    # "type: text" of every console message, in order.
    console: list[str] = field(default_factory=list)
    # Uncaught exceptions of the page's scripts.
    errors: list[str] = field(default_factory=list)

    def report(self) -> str:
        """Everything collected, for an assertion's message."""
        return f"console={self.console} errors={self.errors} blocked={self.blocked}"


@asynccontextmanager
async def open_page(browser: Browser) -> AsyncIterator[BrowserPage]:
    """A fresh context (no cookies, no cache shared with other tests) and page, closed when the block ends."""
    context = await browser.new_context()
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    page = await context.new_page()
    opened = BrowserPage(page)

    def on_failed(request: BrowserRequest) -> None:
        if (urlsplit(request.url).hostname or "") not in LOCAL_HOSTS:
            opened.blocked.append(request.url)

    def on_console(message: ConsoleMessage) -> None:
        opened.console.append(f"{message.type}: {message.text}")

    def on_error(error: Exception) -> None:
        opened.errors.append(str(error))

    context.on("requestfailed", on_failed)
    page.on("console", on_console)
    page.on("pageerror", on_error)
    try:
        yield opened
    finally:
        await context.close()


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    """One headless Chromium for the session's browser tests (skipped where it is not installed)."""
    async with launch_chromium() as browser:
        yield browser


@pytest.fixture
async def chromium_page(chromium: Browser) -> AsyncIterator[BrowserPage]:
    """A fresh page for one test, every host but the local ones blocked."""
    async with open_page(chromium) as opened:
        yield opened


@asynccontextmanager
async def serve_static(files: Mapping[str, Path], *, port: int | None = None) -> AsyncIterator[ServedUvicorn]:
    """``files`` (URL path, e.g. ``/app.js`` -> file) served by uvicorn on 127.0.0.1; ``.url(path, "http")``.

    Another port is another origin to the browser: a page served here calling the API is a cross-origin app.
    A folder maps every file below it (``/modules`` -> ``node_modules``: ``/modules/x/y.js``). Only what is
    named is served; anything else is 404. ``port``: one picked beforehand (``tests.support.free_port()``), for a
    server that must know the page's origin before it starts; else a free one.
    """
    resolved = {path.rstrip("/"): target.resolve() for path, target in files.items()}

    async def serve(request: Request) -> Response:
        wanted = request.url.path
        if wanted == "/favicon.ico" and wanted not in resolved:
            return Response(status_code=204)  # asked by every page; a 404 would be an error in its console
        for prefix, target in resolved.items():
            if wanted == prefix and target.is_file():
                return FileResponse(target)
            if target.is_dir() and wanted.startswith(prefix + "/"):
                candidate = (target / wanted[len(prefix) + 1 :]).resolve()
                if candidate.is_relative_to(target) and candidate.is_file():
                    return FileResponse(candidate)
        return PlainTextResponse("not found", status_code=404)

    app = Starlette(routes=[StarletteRoute("/{path:path}", serve, methods=["GET", "HEAD"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=port or free_port(), log_level="warning", lifespan="off")
    async with serve_uvicorn(config) as served:
        yield served
