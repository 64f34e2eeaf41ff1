"""PostGraphile 4 (Node) as an opponent for bench/reads.py: installed with npm on demand, started, asked the same page.

Installed once into a cache folder outside the repository (~/.cache/portraits-bench/postgraphile-<version>)
with ``npm install postgraphile@<version> --ignore-scripts --no-audit --no-fund`` and reused when
present; without node and npm, or when the install fails, ``install`` says why and returns None, and the
benchmark goes on without it.

How it runs, as close to production and to our server as its CLI allows:

- ``node <cache>/node_modules/postgraphile/cli.js`` directly (no npx wrapper process), NODE_ENV=production,
  one process (no --cluster-workers), no GraphiQL, no query log, no --watch, a pool of 10 like ours;
- without ``--classic-ids``, so ``id`` is the uuid column (``nodeId`` the Relay id) and the answers compare as is;
- the same page: ``allCharacters(first: 100, orderBy: [CREATED_AT_DESC, ID_DESC], condition: {userId: ...})``,
  the same index serves it (characters_user_newest_idx);
- the same token: ``--jwt-secret`` with HS256 only and audience ``authenticated``, so every request's
  bearer token is verified (signature, expiry, audience) as ours is.

What it does NOT do that ours does: the user id is an argument of the query, not taken from the token
(ownership would need row-level security policies reading ``jwt.claims.sub``; the table has none);
the token's ``role`` claim is not used as a PostgreSQL role (``--jwt-role`` points at a claim that does
not exist, so there is no SET ROLE and no role to create). What it does that ours does not: with a
verified token it runs each request in a transaction that first copies the claims into
``jwt.claims.*`` settings (BEGIN, set_config, the query, COMMIT: more database round trips, and
more database CPU, which bench/reads.py reports apart). It cannot sign image URLs, so it is measured
on the plain query only.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson

from list_characters import Server

VERSION = "4.14.1"
CACHE_DIR = Path.home() / ".cache" / "portraits-bench" / f"postgraphile-{VERSION}"
CLI = CACHE_DIR / "node_modules" / "postgraphile" / "cli.js"
INSTALLED = CACHE_DIR / ".installed"  # written after a complete install, so a half-finished one is redone
INSTALL_TIMEOUT = 600.0
AUDIENCE = "authenticated"  # server.auth's
# A claim path no token has: PostGraphile then switches to no role (see the module docstring).
NO_ROLE_CLAIM = "portraits_bench_no_role"
PROBE = b'{"query":"{ __typename }"}'


def install() -> Path | None:
    """PostGraphile's cli.js, installed now if it is not yet; None (with a message printed) when it cannot be."""
    if shutil.which("node") is None:
        print("PostGraphile skipped: node is not installed (it runs on node, installed with npm)")
        return None
    if INSTALLED.exists() and CLI.exists():
        return CLI
    npm = shutil.which("npm")
    if npm is None:
        print("PostGraphile skipped: npm is needed to install it")
        return None
    print(f"installing PostGraphile {VERSION} with npm into {CACHE_DIR} (once)...")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    # A package.json of its own, so npm installs here and never walks up into another project.
    (CACHE_DIR / "package.json").write_text('{"name": "portraits-bench-postgraphile", "private": true}\n')
    command = [
        npm, "install", f"postgraphile@{VERSION}", "--ignore-scripts", "--no-audit", "--no-fund",
        "--loglevel=error", "--save-exact",
    ]
    try:
        done = subprocess.run(
            command, cwd=CACHE_DIR, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"PostGraphile skipped: npm install failed ({error})")
        return None
    if done.returncode != 0 or not CLI.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        print(f"PostGraphile skipped: npm install exited with {done.returncode}: {' / '.join(tail)}")
        return None
    INSTALLED.touch()
    return CLI


def describe(cli: Path) -> str:
    """Which PostGraphile on which node, for the run's header."""
    node = shutil.which("node") or "node"
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        version = "?"
    return f"PostGraphile {VERSION} ({cli.parent}) on node {version.strip()}"


class PostGraphileServer(Server):
    """PostGraphile has no /healthz: it is ready once it answers ``{ __typename }``."""

    def healthy(self) -> bool:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql",
            data=PROBE,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


def start(cli: Path, port: int, dsn: str, secret: str, workdir: Path) -> Server:
    """One PostGraphile process on ``dsn``'s public schema (flags explained in the module docstring)."""
    node = shutil.which("node") or "node"
    args = [
        node, str(cli),
        "--connection", dsn,
        "--schema", "public",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--max-pool-size", "10",
        "--disable-graphiql",
        "--disable-query-log",
        "--jwt-secret", secret,
        "--jwt-verify-algorithms", "HS256",
        "--jwt-verify-audience", AUDIENCE,
        "--jwt-role", NO_ROLE_CLAIM,
    ]
    env = {"NODE_ENV": "production"}
    return PostGraphileServer("postgraphile", args, env, port, workdir / "postgraphile.log")


def list_query(user_id: uuid.UUID, page: int) -> str:
    """The page ``characters(first: page)`` returns, in PostGraphile's own schema."""
    return (
        f'query {{ allCharacters(first:{page}, orderBy:[CREATED_AT_DESC, ID_DESC], condition:{{userId:"{user_id}"}})'
        "{nodes{id name description}} }"
    )


NODES_PATH = "data.allCharacters.nodes"  # where list_query's answer keeps its list (bench/loadgen.py --expect-path)


def nodes(payload: Any) -> Any:
    """The node list of a list_query answer (None when the answer has another shape)."""
    try:
        return payload["data"]["allCharacters"]["nodes"]
    except (KeyError, TypeError):
        return None


def body(user_id: uuid.UUID, page: int) -> bytes:
    return orjson.dumps({"query": list_query(user_id, page)})
