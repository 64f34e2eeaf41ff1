"""GraphiQL served from files this server holds, so the IDE works without internet.

Strawberry's own GraphiQL page loads its scripts and styles from a CDN at page
load: offline it is a blank page. Here the same IDE (GraphiQL 4, its UMD build
on React 18's; GraphiQL 5 ships only ES modules with bare imports and Monaco
workers, which a browser cannot load as plain files without a bundler) comes
from an npm install pinned by ``server/graphiql/package-lock.json``, whose
integrity hashes npm checks (``make graphiql``; the Docker image copies the
built files in). Nothing of it is committed.

Only the files in ``THIRD_PARTY`` (and our page script) are served, each at a
URL carrying a digest of its content, so browsers may cache them for a year.
When any is missing the view falls back to strawberry's CDN page and the start
banner says so (``describe``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

# package.json and package-lock.json (what npm installs), page.html and page.js (ours): all committed.
PACKAGE_DIR = Path(__file__).parent / "graphiql"
# Where `make graphiql` installs (gitignored); GRAPHIQL_ASSETS_DIR names another folder of the same layout.
DEFAULT_ASSETS_DIR = PACKAGE_DIR / "node_modules"
# The command that installs them, for the banner and the README.
INSTALL_HINT = "`make graphiql` (needs npm)"
ASSET_ROUTE = "/graphiql"

JAVASCRIPT = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
# A file's URL holds its digest: a new install is a new URL, so an old one can be kept forever.
IMMUTABLE = "public, max-age=31536000, immutable"
# The page is small and names the current digests: browsers ask again each time.
PAGE_CACHE = "no-cache"
# The page may load scripts and styles only from this server and talk only to it (websockets included).
# GraphiQL's components set inline style attributes; its stylesheet embeds its fonts and icons as data: URLs.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class Asset:
    """A file the page loads: ``name`` is its URL's last segment and its placeholder in page.html."""

    name: str
    source: str  # below the assets folder (an npm node_modules layout), or PACKAGE_DIR for ours
    media_type: str


# What the page loads from the npm install, and nothing else: the Dockerfile copies exactly these paths.
THIRD_PARTY = (
    Asset("react.js", "react/umd/react.production.min.js", JAVASCRIPT),
    Asset("react-dom.js", "react-dom/umd/react-dom.production.min.js", JAVASCRIPT),
    Asset("graphiql.js", "graphiql/graphiql.min.js", JAVASCRIPT),
    Asset("graphiql.css", "graphiql/graphiql.min.css", CSS),
    Asset("explorer.js", "@graphiql/plugin-explorer/dist/index.umd.js", JAVASCRIPT),
    Asset("explorer.css", "@graphiql/plugin-explorer/dist/style.css", CSS),
)
# Our own script: builds the fetcher (queries over HTTP, subscriptions over graphql-transport-ws) and the IDE.
PAGE_SCRIPT = Asset("portraits.js", "page.js", JAVASCRIPT)
PAGE_TEMPLATE = PACKAGE_DIR / "page.html"
# The version shown in the banner is read from here.
GRAPHIQL_PACKAGE = "graphiql/package.json"


@dataclass(frozen=True, slots=True)
class ServedFile:
    path: Path
    media_type: str
    digest: str  # of its content: a new install is a new URL
    url: str  # ASSET_ROUTE/<digest>/<name>


def missing(folder: Path) -> list[str]:
    """The listed files not found below ``folder`` (all of them when it does not exist)."""
    return [asset.source for asset in THIRD_PARTY if not (folder / asset.source).is_file()]


def graphiql_version(folder: Path) -> str | None:
    """The installed GraphiQL's version, from its package.json; None when unreadable."""
    try:
        version = json.loads((folder / GRAPHIQL_PACKAGE).read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) else None


def describe(folder: Path) -> str:
    """How GraphiQL's page gets its scripts, for the start banner."""
    absent = missing(folder)
    if not absent:
        return f"scripts served by this server (GraphiQL {graphiql_version(folder) or '?'} from {folder})"
    return f"scripts from a CDN: not installed in {folder}; install them with {INSTALL_HINT} to work offline"


class GraphiQLAssets:
    """The page and its files, found and hashed once at start; ``load`` gives None when any file is missing."""

    def __init__(self, files: Mapping[str, ServedFile], page: str) -> None:
        self.files = files
        self.page = page

    @classmethod
    def load(cls, folder: Path) -> GraphiQLAssets | None:
        if missing(folder):
            return None
        located = [(asset, folder / asset.source) for asset in THIRD_PARTY]
        located.append((PAGE_SCRIPT, PACKAGE_DIR / PAGE_SCRIPT.source))
        files: dict[str, ServedFile] = {}
        for asset, path in located:
            path = path.resolve()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:20]
            files[asset.name] = ServedFile(path, asset.media_type, digest, f"{ASSET_ROUTE}/{digest}/{asset.name}")
        page = Template(PAGE_TEMPLATE.read_text(encoding="utf-8")).substitute(
            {placeholder(name): file.url for name, file in files.items()}
        )
        return cls(files, page)

    def page_response(self) -> Response:
        return HTMLResponse(
            self.page, headers={"Cache-Control": PAGE_CACHE, "Content-Security-Policy": PAGE_POLICY}
        )

    async def serve(self, request: Request) -> Response:
        """A listed file at its current URL; 404 for anything else (no path is ever read from the request)."""
        file = self.files.get(request.path_params["name"])
        if file is None or file.digest != request.path_params["digest"]:
            return Response(status_code=404)
        return FileResponse(
            file.path,
            media_type=file.media_type,
            headers={"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"},
        )

    def route(self) -> Route:
        return Route(ASSET_ROUTE + "/{digest}/{name}", self.serve, methods=["GET", "HEAD"])


def placeholder(name: str) -> str:
    """page.html's ``$name`` for an asset: ``graphiql.css`` is ``$graphiql_css``."""
    return name.replace(".", "_").replace("-", "_")
