"""The browser tests' own ground: a page from a local test server loads and runs, and other hosts are unreachable."""

from __future__ import annotations

from pathlib import Path

from tests.browser_support import BrowserPage, chromium, chromium_page, serve_static

__all__ = ["chromium", "chromium_page"]  # fixtures used below


async def test_a_local_page_runs_its_script_and_a_remote_host_is_blocked(
    chromium_page: BrowserPage, tmp_path: Path
) -> None:
    """A page served on 127.0.0.1 runs; its fetch of a public host fails (the name does not resolve) and is recorded."""
    # given a page whose script fetches a public host
    page_file = tmp_path / "index.html"
    page_file.write_text(
        "<!doctype html><p id=out>loading</p><script>"
        "fetch('https://example.com/x.js').then(() => 'reached', () => 'refused')"
        ".then(r => { document.getElementById('out').textContent = r; });</script>"
    )
    async with serve_static({"/index.html": page_file}) as origin:
        # when the browser opens it
        await chromium_page.page.goto(origin.url("/index.html", "http"))
        await chromium_page.page.wait_for_function("document.getElementById('out').textContent !== 'loading'")

        # then the script ran and the remote request never left
        assert await chromium_page.page.text_content("#out") == "refused", chromium_page.report()
        assert chromium_page.blocked == ["https://example.com/x.js"], chromium_page.report()
