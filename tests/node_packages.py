"""npm packages for the tests that drive the server from JavaScript (browsers, the graphql-http audit, Apollo Client).

Each set lives in ``tests/node/<name>/``: a ``package.json`` and the ``package-lock.json`` npm wrote, both committed
(the lock pins every version and its integrity hash; no third-party code is committed). ``node_packages(name)``
installs the set with ``npm ci`` once per lock file and returns its ``node_modules``; where node or npm is missing
the calling test is skipped with the reason (`.ci/run` installs them, so CI never skips). ``run_node_json`` runs a
script of a set, as the tests that drive a live server do, and reads the JSON it prints.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

NODE_SETS = Path(__file__).parent / "node"
# Written into node_modules after a complete install: its name carries the lock file's digest, so an edited lock
# installs again and an interrupted install (no stamp) starts over.
STAMP_PREFIX = ".installed-"


def node_or_skip() -> str:
    """The ``node`` executable, or skip the test saying what is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Debian: apt-get install nodejs npm; .ci/run installs it)")
    return node


def node_packages(name: str) -> Path:
    """``tests/node/<name>/node_modules``, installed from its lock file if it is not already."""
    node_or_skip()
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (Debian: apt-get install npm; .ci/run installs it)")
    folder = NODE_SETS / name
    lock = folder / "package-lock.json"
    stamp = folder / "node_modules" / (STAMP_PREFIX + hashlib.sha256(lock.read_bytes()).hexdigest()[:16])
    if not stamp.exists():
        # --ignore-scripts: nothing a package ships runs at install; the packages used here need no build step.
        result = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"],
            cwd=folder, capture_output=True, text=True, timeout=600, check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci in {folder} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        stamp.touch()
    return folder / "node_modules"


async def run_node_json(
    name: str, script: str, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> Any:
    """Run ``tests/node/<name>/<script>`` with node and return the JSON it printed on stdout.

    The set's packages are installed first. node runs as a subprocess while this event loop goes on serving, so the
    script may talk to a live server of the test's own (``live_server`` runs in the tests' loop). ``env`` is added
    to this process's environment. A script that fails, or runs past ``timeout`` seconds, fails the test with its
    stderr.
    """
    node_packages(name)
    process = await asyncio.create_subprocess_exec(
        node_or_skip(), script, *args,
        cwd=NODE_SETS / name, env=None if env is None else {**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        _, stderr = await process.communicate()
        pytest.fail(f"node {script} ran past {timeout} s:\n{stderr.decode()[-4000:]}")
    if process.returncode != 0:
        pytest.fail(f"node {script} failed ({process.returncode}):\n{stderr.decode()[-4000:]}")
    return json.loads(stdout)
