"""`portraits documents register FILE...`: a client's build output registered ahead of time, all or none."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx
from asgi_lifespan import LifespanManager

from server.app import create_app
from server.settings import PERSISTED_REGISTERED, PersistedDocumentsConfig, Settings
from storage import persisted_documents
from storage.persisted_documents import Source
from tests.support import TEST_JWT_SECRET


def sha256(document: str) -> str:
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def printed_query(name: str) -> str:
    """A document as Apollo Client prints it into its manifest (``__typename`` added)."""
    return f"query {name} {{\n  imageModels {{\n    modelKey\n    __typename\n  }}\n}}"


async def register(settings: Settings, tmp_path: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "JWT_SECRET": TEST_JWT_SECRET,
        "PORTRAITS_DATA_DIR": str(tmp_path / "data"),
    }
    environ.pop("PORTRAITS_ENV", None)
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "server.cli", "documents", "register", *map(str, files)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_register_build_output(settings: Settings, pool: asyncpg.Pool, tmp_path: Path) -> None:
    """Given an Apollo persisted query manifest, a graphql-codegen hash -> document map and a .graphql file,
    when `portraits documents register` reads them, twice,
    then it prints each document's hash and name, registers them (new the first time, already registered the
    second), and a server with PERSISTED_DOCUMENTS=registered runs each by its hash."""
    suffix = uuid.uuid4().hex[:8]
    manifest_query = printed_query(f"Models{suffix}")
    codegen_query = printed_query(f"Codegen{suffix}")
    file_query = f"# {suffix}\nquery FromFile {{ imageModels {{ displayName }} }}\n"
    manifest = tmp_path / "persisted-query-manifest.json"
    manifest.write_text(json.dumps({
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [
            {"id": sha256(manifest_query), "name": f"Models{suffix}", "type": "query", "body": manifest_query}
        ],
    }))
    codegen = tmp_path / "persisted-documents.json"
    codegen.write_text(json.dumps({sha256(codegen_query): codegen_query}))
    graphql_file = tmp_path / "from-file.graphql"
    graphql_file.write_text(file_query)

    first = await register(settings, tmp_path, manifest, codegen, graphql_file)
    second = await register(settings, tmp_path, manifest, codegen, graphql_file)

    assert first.returncode == 0, first.stderr
    assert f"registered  {sha256(manifest_query)}  Models{suffix}" in first.stdout
    assert f"registered  {sha256(codegen_query)}  (unnamed)" in first.stdout
    assert f"registered  {sha256(file_query)}  (unnamed)" in first.stdout
    assert "3 new, 0 already registered, 3 in all" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "0 new, 3 already registered, 3 in all" in second.stdout
    config = PersistedDocumentsConfig(mode=PERSISTED_REGISTERED)
    async with LifespanManager(create_app(replace(settings, persisted_documents=config))) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            for document in (manifest_query, codegen_query, file_query):
                extensions = {"persistedQuery": {"version": 1, "sha256Hash": sha256(document)}}
                response = await http.post("/graphql", json={"extensions": extensions})
                assert response.status_code == 200, response.text
                assert response.json()["data"]["imageModels"], response.text


async def test_register_refuses_all_on_any_problem(settings: Settings, pool: asyncpg.Pool, tmp_path: Path) -> None:
    """Given a manifest with one good operation, one whose id is not its body's hash, one that does not
    validate, and an unreadable file,
    when `portraits documents register` reads them,
    then it exits 1 naming each problem, and registers nothing, the good operation included."""
    suffix = uuid.uuid4().hex[:8]
    good = printed_query(f"Good{suffix}")
    wrong_id = printed_query(f"WrongId{suffix}")
    invalid = f"query Invalid{suffix} {{ imageModels {{ noSuchField }} }}"
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [
            {"id": sha256(good), "name": "Good", "type": "query", "body": good},
            {"id": sha256(good), "name": "WrongId", "type": "query", "body": wrong_id},
            {"id": sha256(invalid), "name": "Invalid", "type": "query", "body": invalid},
        ],
    }))

    out = await register(settings, tmp_path, manifest, tmp_path / "missing.graphql")

    assert out.returncode == 1, out.stdout
    assert "nothing registered" in out.stderr
    assert "operations[1] (WrongId): its id" in out.stderr and "is not the SHA-256 of its body" in out.stderr
    assert "operations[2] (Invalid): Cannot query field 'noSuchField'" in out.stderr
    assert "missing.graphql: cannot be read" in out.stderr
    for document in (good, wrong_id, invalid):
        assert await persisted_documents.find(pool, sha256(document), source=Source.REGISTERED) is None
