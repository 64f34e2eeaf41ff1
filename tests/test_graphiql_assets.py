"""GraphiQL's files served by the server itself (server/graphiql_assets.py), checked without a browser.

An install is stood in for by a folder of the npm layout holding a small file at each listed path (no npm needed):
what matters here is which files the route serves, how, and what the page names. The real install in a real
browser is tests/test_graphiql_browser.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from strawberry.http.ides import get_graphql_ide_html

from server.app import create_app
from server.cli import uvicorn_config
from server.graphiql_assets import (
    ASSET_ROUTE,
    CSS,
    DEFAULT_ASSETS_DIR,
    GRAPHIQL_PACKAGE,
    IMMUTABLE,
    JAVASCRIPT,
    PACKAGE_DIR,
    PAGE_SCRIPT,
    THIRD_PARTY,
    GraphiQLAssets,
)
from server.settings import Settings
from tests.server_process import READY, Server
from tests.support import TEST_JWT_SECRET, free_port, serve_uvicorn

REPO = Path(__file__).resolve().parents[1]
HTML = {"Accept": "text/html"}
# Beside the listed files, as in a real install: present in the folder, never to be served.
UNLISTED = ("graphiql/graphiql.min.js.map", "graphiql/README.md", "react/index.js")


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """A folder laid out as npm installs it, each listed file holding its own path, and a few unlisted files."""
    folder = tmp_path / "node_modules"
    for source in [asset.source for asset in THIRD_PARTY] + list(UNLISTED):
        (folder / source).parent.mkdir(parents=True, exist_ok=True)
        (folder / source).write_text(f"/* {source} */\n")
    (folder / GRAPHIQL_PACKAGE).write_text(json.dumps({"name": "graphiql", "version": "4.1.2"}))
    return folder


@asynccontextmanager
async def served(settings: Settings, **changes: object) -> AsyncIterator[str]:
    """The app with ``changes`` to its settings, on a real uvicorn (raw requests need a socket); its base URL."""
    app = create_app(replace(settings, **changes))  # type: ignore[arg-type]
    async with serve_uvicorn(uvicorn_config(app, host="127.0.0.1", port=free_port(), log_level="warning")) as server:
        yield server.url("", "http")


class References(HTMLParser):
    """Every URL a page's script and link elements load."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href"}.get(tag)
        self.urls += [value for name, value in attrs if name == wanted and value is not None]


def references(page: str) -> list[str]:
    parser = References()
    parser.feed(page)
    return parser.urls


async def raw_get(base_url: str, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (no client normalises its dots or escapes); the status and body."""
    address = urlsplit(base_url)
    assert address.hostname is not None and address.port is not None
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_the_page_names_only_its_own_route_and_each_listed_file_is_served_with_its_type_and_a_long_cache(
    settings: Settings, installed: Path
) -> None:
    """Installed: the page loads every script and style from this server, one URL per listed file."""
    # given the files installed
    async with served(settings, graphiql_assets=installed) as base, httpx.AsyncClient(base_url=base) as http:
        # when a browser asks for GraphiQL
        page = await http.get("/graphql", headers=HTML)

        # then it gets our page, asked for again each time, allowed to load from this server only
        assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-cache"
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self';" in policy and "connect-src 'self';" in policy

        # and every script and stylesheet it names is on the asset route (the icon is an empty data: URL)
        urls = references(page.text)
        assert urls[0] == "data:,"
        named = urls[1:]
        assert all(url.startswith(ASSET_ROUTE + "/") for url in named), named
        listed = {asset.name: asset for asset in (*THIRD_PARTY, PAGE_SCRIPT)}
        assert sorted(url.rsplit("/", 1)[1] for url in named) == sorted(listed)

        for url in named:
            # when each is fetched
            response = await http.get(url)
            head = await http.head(url)

            # then it is the listed file, with its type, cacheable for a year, never sniffed as something else
            asset = listed[url.rsplit("/", 1)[1]]
            source = PACKAGE_DIR / asset.source if asset is PAGE_SCRIPT else installed / asset.source
            assert response.status_code == 200, url
            assert response.content == source.read_bytes(), url
            assert response.headers["content-type"] == asset.media_type
            assert response.headers["cache-control"] == IMMUTABLE == "public, max-age=31536000, immutable"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert head.status_code == 200 and head.content == b""
        assert {asset.media_type for asset in listed.values()} == {JAVASCRIPT, CSS}
        assert JAVASCRIPT == "text/javascript; charset=utf-8" and CSS == "text/css; charset=utf-8"


async def test_nothing_but_the_listed_files_is_served_however_the_path_is_written(
    settings: Settings, installed: Path
) -> None:
    """Unlisted files beside the listed ones, other digests, and every spelling of a climb out are 404s."""
    # given the files installed, and the URL of one of them
    assets = GraphiQLAssets.load(installed)
    assert assets is not None
    url = assets.files["graphiql.js"].url
    digest = url.split("/")[2]
    attempts = [
        f"{ASSET_ROUTE}/{'0' * len(digest)}/graphiql.js",  # another digest: not this install's file
        f"{ASSET_ROUTE}/{digest}/graphiql.min.js",  # the package's own name for it
        f"{ASSET_ROUTE}/{digest}/graphiql/graphiql.min.js",  # its path in the install
        f"{ASSET_ROUTE}/{digest}/graphiql.min.js.map",
        f"{ASSET_ROUTE}/{digest}/package.json",
        f"{ASSET_ROUTE}/{digest}/page.html",
        f"{ASSET_ROUTE}/{digest}/..",
        f"{ASSET_ROUTE}/{digest}/../../graphiql/README.md",
        f"{ASSET_ROUTE}/{digest}/..%2f..%2fgraphiql%2fREADME.md",
        f"{ASSET_ROUTE}/{digest}/%2e%2e%2f%2e%2e%2freact%2findex.js",
        f"{ASSET_ROUTE}/..%2f..%2f..%2fserver%2fsettings.py",
        f"{ASSET_ROUTE}/{digest}/%2fetc%2fpasswd",
        f"{ASSET_ROUTE}/{digest}/graphiql.js%00.map",
        f"{ASSET_ROUTE}/{digest}/",
        f"{ASSET_ROUTE}/",
    ]
    async with served(settings, graphiql_assets=installed) as base:
        assert await raw_get(base, url) == (200, b"/* graphiql/graphiql.min.js */\n")
        for target in attempts:
            # when any other path under the route is asked for, exactly as written
            status, body = await raw_get(base, target)

            # then it is not found, and no file's content comes back
            assert status == 404, target
            assert b"/*" not in body and b"root:" not in body and b"import" not in body, target
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.post(url, content=b"")).status_code == 405


@pytest.mark.parametrize("absent", ["all", "one"])
async def test_without_the_files_graphiql_is_strawberrys_page_on_its_cdn(
    settings: Settings, installed: Path, absent: str
) -> None:
    """Not installed (or installed in part): strawberry's own page, its scripts from a CDN, and no asset route."""
    # given no install, or one missing a listed file
    if absent == "all":
        folder = installed.parent / "nothing-here"
    else:
        folder = installed
        (installed / THIRD_PARTY[0].source).unlink()
    async with served(settings, graphiql_assets=folder) as base, httpx.AsyncClient(base_url=base) as http:
        # when a browser asks for GraphiQL
        page = await http.get("/graphql", headers=HTML)

        # then it gets strawberry's page as it ships, whose scripts and styles come from another host
        assert page.status_code == 200
        assert page.text == get_graphql_ide_html("graphiql")
        urls = [url for url in references(page.text) if not url.startswith("data:")]
        assert urls and all(url.startswith("https://") and "127.0.0.1" not in url for url in urls), urls

        # and nothing is served under the asset route
        assert (await http.get(f"{ASSET_ROUTE}/0/react.js")).status_code == 404


async def test_with_graphiql_off_neither_the_page_nor_its_files_are_served(settings: Settings, installed: Path) -> None:
    """GRAPHIQL=false: no IDE at all, even with the files installed."""
    # given the files installed and GraphiQL turned off
    assets = GraphiQLAssets.load(installed)
    assert assets is not None
    async with served(settings, graphiql_assets=installed, graphiql=False) as base, httpx.AsyncClient(
        base_url=base
    ) as http:
        # when a browser asks for the page and a file
        page = await http.get("/graphql", headers=HTML)
        file = await http.get(assets.files["react.js"].url)

    # then neither is there
    assert page.status_code == 404 and "graphiql" not in page.text.lower()
    assert file.status_code == 404


@pytest.mark.parametrize("install", [True, False])
def test_the_start_banner_says_where_graphiqls_scripts_come_from(
    tmp_path: Path, installed: Path, database_url: str, servers: list[Server], install: bool
) -> None:
    """`portraits serve` prints whether GraphiQL works offline and, when not, how to install its files."""
    # given `serve` with the files installed, or pointed at a folder without them
    folder = installed if install else tmp_path / "nothing-here"
    server = Server(
        tmp_path / "data", DATABASE_URL=database_url, JWT_SECRET=TEST_JWT_SECRET, GRAPHIQL_ASSETS_DIR=str(folder)
    )
    servers.append(server)

    # when it is ready
    server.wait_for(READY)
    banner = server.rest_of_output()
    assert server.stop(signal.SIGTERM) == 0

    # then the line under GraphiQL's URL says which
    line = banner.split(f"GraphiQL   {server.url}/graphql\n", 1)[1].splitlines()[0].strip()
    if install:
        assert line == f"scripts served by this server (GraphiQL 4.1.2 from {folder})"
    else:
        assert line == (
            f"scripts from a CDN: not installed in {folder}; install them with `make graphiql` (needs npm) "
            "to work offline"
        )


def test_the_install_folder_is_a_setting_defaulting_to_where_make_installs() -> None:
    """GRAPHIQL_ASSETS_DIR names the folder; by default it is server/graphiql/node_modules, where `make` puts it."""
    # given settings without and with the variable, then the folder is the default or the one named
    assert Settings.from_environ({"JWT_SECRET": TEST_JWT_SECRET}).graphiql_assets == DEFAULT_ASSETS_DIR
    assert DEFAULT_ASSETS_DIR == REPO / "server" / "graphiql" / "node_modules"
    named = Settings.from_environ({"JWT_SECRET": TEST_JWT_SECRET, "GRAPHIQL_ASSETS_DIR": "/opt/graphiql"})
    assert named.graphiql_assets == Path("/opt/graphiql")


def test_the_docker_image_copies_in_exactly_the_listed_files_and_points_the_server_at_them() -> None:
    """The Dockerfile's node stage copies what the server serves (and GraphiQL's package.json for its version)."""
    # given the Dockerfile
    dockerfile = (REPO / "Dockerfile").read_text()

    # when its list of copied files is read
    copied = re.search(r"cp --parents \\\n(.*?)\s+/assets/\n", dockerfile, re.S)
    assert copied is not None
    files = [line.strip(" \\") for line in copied[1].splitlines()]

    # then it is the listed files, npm ci installs from the lock without running scripts, and the server looks there
    assert sorted(files) == sorted([asset.source for asset in THIRD_PARTY] + [GRAPHIQL_PACKAGE])
    assert "COPY server/graphiql/package.json server/graphiql/package-lock.json ./" in dockerfile
    assert "RUN npm ci --ignore-scripts" in dockerfile
    assert "COPY --from=graphiql /assets /opt/graphiql" in dockerfile
    assert "GRAPHIQL_ASSETS_DIR=/opt/graphiql" in dockerfile


def test_the_npm_install_is_pinned_and_integrity_checked() -> None:
    """package.json names exact versions; the lock holds an integrity hash for every package npm installs."""
    # given the committed package.json and lock
    manifest = json.loads((PACKAGE_DIR / "package.json").read_text())
    lock = json.loads((PACKAGE_DIR / "package-lock.json").read_text())

    # then every dependency is one exact version, the one the lock installs
    for name, version in manifest["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), (name, version)
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    # and every package in the lock is checked against its sha512 integrity hash
    installed = {path: entry for path, entry in lock["packages"].items() if path}
    assert installed and all(entry["integrity"].startswith("sha512-") for entry in installed.values())
    # and every listed file belongs to a package the lock installs
    for asset in THIRD_PARTY:
        package = "/".join(asset.source.split("/")[: 2 if asset.source.startswith("@") else 1])
        assert f"node_modules/{package}" in lock["packages"], asset
