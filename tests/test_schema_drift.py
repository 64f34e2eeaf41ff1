"""schema.graphql is exported from code; this fails when the two drift apart."""

from __future__ import annotations

from pathlib import Path

from strawberry.printer import print_schema

from graph.schema import schema

SDL = Path(__file__).resolve().parent.parent / "schema.graphql"


def test_committed_sdl_matches_the_code() -> None:
    exported = print_schema(schema) + "\n"

    assert SDL.read_text(encoding="utf-8") == exported, "schema.graphql is stale: run `make schema` and commit it"
