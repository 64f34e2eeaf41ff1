"""GraphiQL in headless Chromium on the scripts the server serves itself, every other host blocked.

The assets come from the same install `make run` makes (`make graphiql`: npm ci from server/graphiql's lock into
server/graphiql/node_modules); the test is skipped where npm or node is missing, and where Chromium is
(tests/browser_support.py). The page is driven as a person would: the token typed into GraphiQL's Headers tab, the
operation into its query editor, the run button pressed, the answer read from its result pane. Queries go through
GraphiQL's own fetcher over HTTP, the subscription over graphql-transport-ws with the headers as connection_init.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page

from server.app import create_app
from server.cli import uvicorn_config
from server.graphiql_assets import ASSET_ROUTE, DEFAULT_ASSETS_DIR, missing
from server.settings import Settings
from tests.browser_support import BrowserPage, chromium, chromium_page
from tests.conftest import token_for
from tests.generation_support import GraphQL, create_character, generate_portrait
from tests.support import ServedUvicorn, free_port, serve_uvicorn

__all__ = ["chromium", "chromium_page"]  # fixtures used below

REPO = Path(__file__).resolve().parents[1]
# npm ci of ~110 packages takes ~15 s here; the bound only stops a broken registry from hanging the suite.
INSTALL_SECONDS = 600
# A job on the local renderer takes well under a second; GraphiQL's first paint a second or two.
PAGE_WAIT_MS = 30_000


@pytest.fixture(scope="session")
def graphiql_assets() -> Path:
    """The assets `make run` installs (`make graphiql`), installed if they are not; skipped without npm or node."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian: apt-get install nodejs npm; .ci/run installs it)")
    result = subprocess.run(
        ["make", "-s", "graphiql"], cwd=REPO, capture_output=True, text=True, timeout=INSTALL_SECONDS, check=False
    )
    absent = missing(DEFAULT_ASSETS_DIR)
    assert not absent, f"make graphiql left {absent} missing:\n{result.stdout}\n{result.stderr}"
    return DEFAULT_ASSETS_DIR


@pytest.fixture
async def graphiql_server(settings: Settings, graphiql_assets: Path) -> AsyncIterator[ServedUvicorn]:
    """The app with those assets, served by a real uvicorn on 127.0.0.1 (the browser needs TCP and websockets)."""
    app = create_app(replace(settings, graphiql_assets=graphiql_assets))
    async with serve_uvicorn(uvicorn_config(app, host="127.0.0.1", port=free_port(), log_level="warning")) as served:
        yield served


async def replace_editor_text(page: Page, editor: str, text: str) -> None:
    """Select everything in one of GraphiQL's editors and type ``text`` over it, as a paste would."""
    await page.locator(f"{editor} .CodeMirror:visible").click()
    await page.keyboard.press("Control+A")
    await page.keyboard.insert_text(text)


async def run_operation(page: Page, document: str) -> None:
    """Type ``document`` into the query editor and press run once GraphiQL has read it.

    GraphiQL parses the editor's text (the operation name it will send) on a short debounce, then calls the
    page's onEditQuery, which keeps the text in the address: run before that, and the old name is sent.
    """
    await replace_editor_text(page, ".graphiql-query-editor", document)
    await page.wait_for_function("text => new URLSearchParams(location.search).get('q') === text", arg=document)
    await page.locator(".graphiql-execute-button").click()


async def wait_for_result(page: Page, opened: BrowserPage, wanted: Callable[[Any], bool]) -> Any:
    """The result pane's JSON once ``wanted`` accepts it."""
    pane = page.locator(".result-window")
    deadline_ms = PAGE_WAIT_MS
    while True:
        text = await pane.inner_text()
        try:
            shown = json.loads(text.replace("\u00a0", " "))
        except ValueError:
            shown = None
        if shown is not None and wanted(shown):
            return shown
        assert deadline_ms > 0, f"the result pane shows {text!r}; {opened.report()}"
        await page.wait_for_timeout(50)
        deadline_ms -= 50


def job_status(shown: Any) -> str | None:
    status = ((shown.get("data") or {}).get("jobChanged") or {}).get("status")
    return status if isinstance(status, str) else None


async def test_graphiql_runs_a_query_and_a_subscription_offline_with_the_token_from_its_headers_tab(
    chromium_page: BrowserPage,
    graphiql_server: ServedUvicorn,
    graphql: GraphQL,
    alice: uuid.UUID,
    start_generation: Callable[..., Awaitable[Any]],
) -> None:
    """GraphiQL loads from this server only, sends the Headers tab's token with a query over HTTP and a subscription
    over graphql-transport-ws, and shows a portrait job going from QUEUED to COMPLETED while a worker runs it."""
    # given alice's character and a portrait job queued for it, no worker running yet
    character = await create_character(graphql, alice, name="Ilse Marrow")
    job = await generate_portrait(graphql, alice, characterId=character["id"])
    page = chromium_page.page

    # when GraphiQL is opened, with every host but this machine blocked
    await page.goto(graphiql_server.url("/graphql", "http"))
    await page.locator(".graphiql-query-editor .CodeMirror").wait_for(timeout=PAGE_WAIT_MS)

    # and alice's token is typed into its Headers tab
    await page.get_by_role("button", name="Headers").click()
    headers = json.dumps({"Authorization": f"Bearer {token_for(alice)}"})
    await replace_editor_text(page, ".graphiql-editor-tool", headers)

    # and a query asking for her character is run
    await run_operation(page, f'query Mine {{ character(id: "{character["id"]}") {{ id name }} }}')

    # then the result pane shows it: the token went with GraphiQL's HTTP request
    shown = await wait_for_result(page, chromium_page, lambda body: "data" in body or "errors" in body)
    assert shown == {"data": {"character": {"id": character["id"], "name": "Ilse Marrow"}}}, chromium_page.report()

    # when a subscription to the job is run
    await run_operation(page, f'subscription Progress {{ jobChanged(id: "{job["id"]}") {{ id status }} }}')

    # then its first event shows the job queued: the socket was accepted with the token as connection_init
    queued = await wait_for_result(page, chromium_page, lambda body: job_status(body) is not None)
    assert job_status(queued) == "QUEUED", chromium_page.report()

    # when a worker runs the job
    await start_generation("local")

    # then the page shows it completed, pushed over the same subscription
    done = await wait_for_result(page, chromium_page, lambda body: job_status(body) == "COMPLETED")
    assert done["data"]["jobChanged"]["id"] == job["id"]

    # and nothing was fetched from anywhere else: every script and style came from the server's own route
    assert chromium_page.blocked == [], chromium_page.report()
    assert chromium_page.errors == [], chromium_page.report()
    loaded = await page.evaluate("performance.getEntriesByType('resource').map(entry => entry.name)")
    assets = [url for url in loaded if f"{ASSET_ROUTE}/" in url]
    assert len(assets) == 7, loaded
    assert all(url.startswith(graphiql_server.url("/", "http")) for url in loaded), loaded


async def test_without_the_files_graphiql_reaches_for_a_cdn_and_offline_never_appears(
    chromium_page: BrowserPage, settings: Settings, tmp_path: Path
) -> None:
    """Not installed: strawberry's page asks another host for GraphiQL, which offline leaves no IDE on the page."""
    # given a server without GraphiQL's files
    app = create_app(replace(settings, graphiql_assets=tmp_path / "not-installed"))
    async with serve_uvicorn(uvicorn_config(app, host="127.0.0.1", port=free_port(), log_level="warning")) as served:
        # when GraphiQL is opened with every other host unreachable
        page = chromium_page.page
        await page.goto(served.url("/graphql", "http"), wait_until="load")

        # then its scripts were asked of another host, and failed, and no editor was drawn
        assert chromium_page.blocked, chromium_page.report()
        assert all(not url.startswith(served.url("/", "http")) for url in chromium_page.blocked)
        assert await page.locator(".graphiql-query-editor").count() == 0
