"""A real browser app on another origin: headless Chromium runs tests/browser/app.js against a live server.

The page is served by a second server on another port (another origin); its script queries with a bearer token
over fetch and graphql-ws (the npm package's browser build, tests/node/graphql-ws), creates a character, starts a
portrait, follows the job over the websocket, and shows the signed image. A page on an origin not in
CORS_ALLOWED_ORIGINS can neither read an answer nor open a websocket. Every host but 127.0.0.1 is blocked.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from server.app import create_app
from server.cli import uvicorn_config
from server.settings import Settings
from tests.browser_support import BrowserPage, chromium, chromium_page, serve_static
from tests.conftest import token_for
from tests.node_packages import node_packages
from tests.support import TEST_JWT_SECRET, ServedUvicorn, free_port, serve_uvicorn

__all__ = ["chromium", "chromium_page"]  # fixtures used below

PAGES = Path(__file__).parent / "browser"
# The app finishes in about two seconds (a 256 px portrait from the local renderer, one second of it simulated
# latency); the bound stops a broken one.
APP_TIMEOUT_MS = 60_000


@dataclass
class CrossOriginSetup:
    api: ServedUvicorn  # the API, allowing only the app's origin
    app: ServedUvicorn  # the app's origin: tests/browser/ and graphql-ws
    other: ServedUvicorn  # the same files on an origin the API does not allow

    @property
    def graphql_url(self) -> str:
        return self.api.url("/graphql", "http")

    def page_url(self, origin: ServedUvicorn, user: uuid.UUID) -> str:
        return f"{origin.url('/app.html', 'http')}#api={self.graphql_url}&token={token_for(user)}"


@pytest.fixture
async def cross_origin(database_url: str, tmp_path: Path, pool: asyncpg.Pool) -> AsyncIterator[CrossOriginSetup]:
    """The API served by uvicorn with one generation worker (as `portraits serve` runs), and two page origins."""
    modules = node_packages("graphql-ws")
    api_port, app_port = free_port(), free_port()
    settings = Settings.from_environ(
        {
            "DATABASE_URL": database_url,
            "JWT_SECRET": TEST_JWT_SECRET,
            "PORTRAITS_DATA_DIR": str(tmp_path),
            "PUBLIC_URL": f"http://127.0.0.1:{api_port}",
            "CORS_ALLOWED_ORIGINS": f"http://127.0.0.1:{app_port}",
            "WORKERS": "1",
            "IMAGE_SIZE": "256",
            # The page subscribes once the mutation has answered: a render lasting a second leaves it time to see
            # the job before it ends (an instant one, under a busy CI machine, finished first: only COMPLETED seen).
            "LOCAL_RENDER_LATENCY_MS": "1000",
        }
    )
    files = {"/app.html": PAGES / "app.html", "/app.js": PAGES / "app.js", "/modules": modules}
    config = uvicorn_config(create_app(settings), host="127.0.0.1", port=api_port, log_level="warning")
    async with (
        serve_uvicorn(config) as api,
        serve_static(files, port=app_port) as app,
        serve_static(files) as other,
    ):
        yield CrossOriginSetup(api, app, other)


async def test_a_page_on_an_allowed_origin_queries_generates_subscribes_and_shows_the_image(
    cross_origin: CrossOriginSetup, chromium_page: BrowserPage
) -> None:
    """The whole client flow from a browser on another origin ends with the signed portrait on the page."""
    # given a user's token, handed to the page
    user = uuid.uuid4()
    page = chromium_page.page

    # when the app runs
    await page.goto(cross_origin.page_url(cross_origin.app, user))
    await page.wait_for_function(
        "document.getElementById('state').textContent !== 'loading'", timeout=APP_TIMEOUT_MS
    )
    result: dict[str, Any] = await page.evaluate("window.appResult")

    # then every step worked: the token over fetch (X-Request-ID readable) and over the websocket
    assert await page.text_content("#state") == "done", chromium_page.report()
    assert result["httpViewer"] == result["socketViewer"] == str(user)
    assert result["requestId"], "X-Request-ID was not exposed to the page"
    # and the job was followed to its end over the subscription
    assert result["statuses"][-1] == "COMPLETED" and len(result["statuses"]) >= 2, result
    # and the signed image, from the API's origin, loaded in the <img>
    assert result["imageUrl"].startswith(cross_origin.api.url("/storage/v1/object/sign/user-library/", "http"))
    assert (result["naturalWidth"], result["naturalHeight"]) == (256, 256)
    assert await page.evaluate("document.getElementById('portrait').naturalWidth") == 256
    assert chromium_page.blocked == [] and chromium_page.errors == [], chromium_page.report()
    assert [line for line in chromium_page.console if line.startswith("error")] == [], chromium_page.report()


async def test_a_page_on_another_origin_can_neither_read_answers_nor_open_a_websocket(
    cross_origin: CrossOriginSetup, chromium_page: BrowserPage
) -> None:
    """The browser enforces the refused preflight (fetch fails) and the 403 upgrade (the socket never opens)."""
    # given the page served from an origin the API does not allow
    page = chromium_page.page
    await page.goto(cross_origin.other.url("/modules/graphql-ws/package.json", "http"))

    # when its script calls the API with a token, over HTTP and over a websocket
    outcome: dict[str, str] = await page.evaluate(
        """async ([url, token]) => {
            let fetched;
            try {
                await fetch(url, { method: "POST", body: '{"query": "{ __typename }"}',
                                   headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` } });
                fetched = "read";
            } catch (error) { fetched = `failed: ${error.name}`; }
            const socket = await new Promise((resolve) => {
                const ws = new WebSocket(url.replace(/^http/, "ws"), "graphql-transport-ws");
                ws.onopen = () => { resolve("open"); ws.close(); };
                ws.onclose = (event) => resolve(`closed ${event.code}`);
            });
            return { fetched, socket };
        }""",
        [cross_origin.graphql_url, token_for(uuid.uuid4())],
    )

    # then neither got through, and the browser says why
    assert outcome == {"fetched": "failed: TypeError", "socket": "closed 1006"}, chromium_page.report()
    console = "\n".join(chromium_page.console)
    assert "Response to preflight request doesn't pass access control check" in console, chromium_page.report()
    assert "Unexpected response code: 403" in console, chromium_page.report()
