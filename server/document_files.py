"""A client's build output read as documents to register (`portraits documents register FILE...`).

Three forms, told apart by their content:

- Apollo's persisted query manifest (``@apollo/generate-persisted-query-manifest``):
  ``{"format": "apollo-persisted-query-manifest", "version": 1, "operations": [{"id", "name", "type", "body"}]}``,
  whose ids are the SHA-256 of the bodies (its default, and what Apollo's persisted-queries link sends);
- a JSON object of hash -> document (graphql-codegen's client preset, ``persistedDocuments``);
- a ``.graphql`` / ``.gql`` file, registered as its exact text (what a client sends when it sends the file).

A document must parse, meet the limits and validate against the schema
(graph/schema.py: ``document_errors``) and hold at most ``MAX_BODY_CHARS``
characters; any problem in any file is reported and nothing is registered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import strawberry

from graph.schema import document_errors
from server.persisted_queries import sha256_hex
from storage.persisted_documents import MAX_BODY_CHARS, PersistedDocument, Source

MANIFEST_FORMAT = "apollo-persisted-query-manifest"
GRAPHQL_SUFFIXES = (".graphql", ".gql")


@dataclass(slots=True)
class ReadDocuments:
    """What the files hold: the documents (deduplicated by hash) and every problem found, by file."""

    documents: dict[str, PersistedDocument] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def read_document_files(paths: list[Path], schema: strawberry.Schema) -> ReadDocuments:
    read = ReadDocuments()
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            read.problems.append(f"{path}: cannot be read: {error}")
            continue
        if path.suffix.lower() in GRAPHQL_SUFFIXES:
            _add(read, schema, f"{path}", text, sha256=None, name=None)
        else:
            _read_json(read, schema, path, text)
    return read


def _read_json(read: ReadDocuments, schema: strawberry.Schema, path: Path, text: str) -> None:
    try:
        data = json.loads(text)
    except ValueError as error:
        read.problems.append(f"{path}: not JSON ({error}); a .graphql file must be named *.graphql or *.gql")
        return
    if isinstance(data, dict) and "format" in data:
        _read_manifest(read, schema, path, data)
    elif isinstance(data, dict) and data and all(isinstance(body, str) for body in data.values()):
        for sha256, body in data.items():
            _add(read, schema, f"{path}: {sha256}", body, sha256=sha256, name=None)
    else:
        read.problems.append(
            f"{path}: neither an Apollo persisted query manifest nor an object of hash -> document"
        )


def _read_manifest(read: ReadDocuments, schema: strawberry.Schema, path: Path, data: dict[str, object]) -> None:
    if data.get("format") != MANIFEST_FORMAT or data.get("version") != 1:
        read.problems.append(
            f"{path}: format {data.get('format')!r} version {data.get('version')!r}: "
            f"only {MANIFEST_FORMAT!r} version 1 is read"
        )
        return
    operations = data.get("operations")
    if not isinstance(operations, list):
        read.problems.append(f"{path}: 'operations' must be a list")
        return
    for index, operation in enumerate(operations):
        where = f"{path}: operations[{index}]"
        if not isinstance(operation, dict) or not all(
            isinstance(operation.get(key), str) for key in ("id", "name", "body")
        ):
            read.problems.append(f"{where}: needs string 'id', 'name' and 'body'")
            continue
        _add(read, schema, f"{where} ({operation['name']})", operation["body"], operation["id"], operation["name"])


def _add(
    read: ReadDocuments, schema: strawberry.Schema, where: str, body: str, sha256: str | None, name: str | None
) -> None:
    actual = sha256_hex(body)
    if sha256 is not None and sha256 != actual:
        read.problems.append(
            f"{where}: its id {sha256!r} is not the SHA-256 of its body ({actual}); "
            "only SHA-256 ids are served (Apollo's default)"
        )
        return
    if len(body) > MAX_BODY_CHARS:
        read.problems.append(f"{where}: {len(body)} characters; at most {MAX_BODY_CHARS} are kept")
        return
    if errors := document_errors(body, schema):
        read.problems.append(f"{where}: " + "; ".join(error.message for error in errors))
        return
    read.documents[actual] = PersistedDocument(actual, body, Source.REGISTERED, name)
