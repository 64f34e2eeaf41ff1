"""The client examples of docs/clients.md run against a live server, and the page shows them as they are.

Each example is an ES module in tests/node/clients/ (npm lock committed): Apollo Client 4 and urql, each with
graphql-ws for subscriptions and its persisted-queries link. Run by node with a token the test makes, it creates a
character, generates a portrait (the local renderer, in a worker of the server), follows the job over a websocket
until it completes, lists the library with signed URLs, downloads the image, and prints what it saw as JSON. The
page quotes each file in a code block marked ``<!-- example: tests/node/clients/<file> -->``; a block that differs
from its file by a byte fails here, so the page cannot drift from what runs.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from resolvers.errors import PortraitsError
from server import persisted_queries, request_errors
from server.app import create_app
from server.cli import uvicorn_config
from server.settings import Settings
from storage import persisted_documents
from tests.conftest import token_for
from tests.node_packages import NODE_SETS, run_node_json
from tests.support import TEST_JWT_SECRET, free_port, serve_uvicorn

ROOT = Path(__file__).parent.parent
PAGE = ROOT / "docs" / "clients.md"
README = ROOT / "README.md"
EXAMPLES = NODE_SETS / "clients"
# A marker comment, then a fenced block: the block is the named file, byte for byte.
MARKED_BLOCK = re.compile(r"<!-- example: (?P<path>[^ ]+) -->\n```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$", re.S | re.M)
# A row of an error table: its first cell is a code.
CODE_ROW = re.compile(r"^\| `(?P<code>[A-Z_]+)`", re.M)
# graph/errors.py names the codes it gives graphql-core's own errors as literals.
CODE_LITERAL = re.compile(r'"(?P<code>[A-Z]+(?:_[A-Z]+)+)"')
PNG_SIGNATURE_SIZE = 8
IMAGE_SIZE = 256
# Long enough for the subscription to see the job before it ends; a generation then takes about half a second.
RENDER_LATENCY_MS = 300
# The library query of both examples, as kept once a client has sent it by hash (automatic persisted queries).
LIBRARY_FIELD = "libraryAssets(first: 10, tab: CHARACTERS)"
FORGET_EXAMPLE_QUERIES = "DELETE FROM persisted_documents WHERE source = 'automatic' AND body LIKE $1"
EXAMPLE_QUERIES_KEPT = "SELECT sha256, body FROM persisted_documents WHERE source = 'automatic' AND body LIKE $1"


@pytest.fixture
async def api(database_url: str, tmp_path: Path, pool: asyncpg.Pool) -> AsyncIterator[str]:
    """The API as `portraits serve` runs it (one generation worker, signed URLs on its own address); its URL."""
    port = free_port()
    settings = Settings.from_environ(
        {
            "DATABASE_URL": database_url,
            "JWT_SECRET": TEST_JWT_SECRET,
            "PORTRAITS_DATA_DIR": str(tmp_path),
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "WORKERS": "1",
            "IMAGE_SIZE": str(IMAGE_SIZE),
            "LOCAL_RENDER_LATENCY_MS": str(RENDER_LATENCY_MS),
        }
    )
    config = uvicorn_config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    async with serve_uvicorn(config) as served:
        yield served.url("/graphql", "http")


def marked_blocks() -> dict[str, str]:
    """Each marked code block of the page, by the file it names."""
    return {match["path"]: match["body"] for match in MARKED_BLOCK.finditer(PAGE.read_text(encoding="utf-8"))}


def test_the_page_quotes_every_example_byte_for_byte() -> None:
    """Given docs/clients.md and the examples in tests/node/clients/,
    when the page's marked code blocks are read,
    then there is one for each example, and each is its file exactly."""
    blocks = marked_blocks()
    examples = sorted(path.relative_to(ROOT).as_posix() for path in EXAMPLES.glob("*.mjs"))

    assert sorted(blocks) == examples and len(examples) >= 2, (sorted(blocks), examples)
    for path, body in blocks.items():
        assert body == (ROOT / path).read_text(encoding="utf-8"), f"docs/clients.md's block differs from {path}"


def codes_in_table(text: str, heading: str) -> set[str]:
    """The codes the first column of the tables under ``heading`` names (up to the next heading)."""
    section = text.split(f"\n{heading}\n", 1)[1].split("\n#", 1)[0]
    return {match["code"] for match in CODE_ROW.finditer(section)}


def subclasses(cls: type[PortraitsError]) -> list[type[PortraitsError]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in subclasses(direct))]


def test_the_error_table_names_every_code_the_server_gives() -> None:
    """Given the codes the server's errors carry (resolvers' errors, request refusals, persisted-query
    refusals, graph/errors.py's codes for graphql-core's errors) and the README's Errors table,
    when the page's error table is read,
    then it names each of them, and nothing else."""
    given = (
        {cls.code for cls in subclasses(PortraitsError)}
        | {value for name, value in vars(request_errors).items() if isinstance(value, str) and name == value}
        | {persisted_queries.NOT_FOUND, persisted_queries.NOT_SUPPORTED, persisted_queries.NOT_IN_LIST}
        | {m["code"] for m in CODE_LITERAL.finditer((ROOT / "graph" / "errors.py").read_text(encoding="utf-8"))}
    )
    in_readme = codes_in_table(README.read_text(encoding="utf-8"), "## Errors")

    documented = codes_in_table(PAGE.read_text(encoding="utf-8"), "## Error codes")

    assert len(in_readme) >= 10 and given - documented == set() and in_readme - documented == set(), (
        given - documented, in_readme - documented,
    )
    assert documented <= given | in_readme, documented - (given | in_readme)


@pytest.mark.parametrize("example", ["apollo.mjs", "urql.mjs"])
async def test_an_example_creates_generates_follows_the_job_and_downloads_the_signed_image(
    api: str, pool: asyncpg.Pool, example: str
) -> None:
    """Given a live server with a generation worker, and a user's token,
    when the example runs with node against it,
    then it created the character, followed its portrait's job over the websocket to COMPLETED, found the
    library copy with a signed URL on the server's address, downloaded the PNG through it, read NOT_FOUND from a
    missing job's error, and sent its queries by hash (the server now keeps them)."""
    user = uuid.uuid4()
    # The examples' queries may be kept from an earlier run: forget them, so only this run can keep them again.
    await pool.execute(FORGET_EXAMPLE_QUERIES, f"%{LIBRARY_FIELD}%")

    run: dict[str, Any] = await run_node_json(
        "clients", example, env={"PORTRAITS_URL": api, "PORTRAITS_TOKEN": token_for(user)}
    )

    assert run["viewer"] == str(user)
    assert run["character"]["name"] == "Seraphine Vale"
    assert run["job"]["status"] == "QUEUED"
    assert run["statuses"][-1] == "COMPLETED" and len(run["statuses"]) >= 2, run["statuses"]
    asset = run["asset"]
    assert asset["sourceJobId"] == run["job"]["id"]
    assert asset["path"].startswith(f"user-library/{user}/") and asset["path"].endswith(".png")
    assert (asset["width"], asset["height"]) == (IMAGE_SIZE, IMAGE_SIZE)
    origin = api.removesuffix("/graphql")
    assert asset["signedUrl"]["url"].startswith(f"{origin}/storage/v1/object/sign/{asset['path']}?token=")
    assert asset["signedUrl"]["expiresAt"]
    assert run["image"]["status"] == 200 and run["image"]["contentType"] == "image/png"
    assert run["image"]["size"] > PNG_SIGNATURE_SIZE
    assert run["missingJobCodes"] == ["NOT_FOUND"]
    kept = await pool.fetch(EXAMPLE_QUERIES_KEPT, f"%{LIBRARY_FIELD}%")
    assert len(kept) == 1 and "query Library" in kept[0]["body"], kept
    assert await persisted_documents.find(pool, kept[0]["sha256"]) is not None
