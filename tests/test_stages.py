"""The schema's own stages (graph/stages.py) run around strawberry's, with the schema's extensions inside them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from strawberry.extensions import SchemaExtension

from graph.schema import build_schema


class Recording(SchemaExtension):
    """Writes down each hook's start and end, and what our stages had done when its stage started."""

    events: ClassVar[list[str]] = []

    def on_operation(self) -> Iterator[None]:
        self.events.append("operation")
        yield
        self.events.append("/operation")

    def on_parse(self) -> Iterator[None]:
        parsed = self.execution_context.graphql_document is not None
        self.events.append(f"parse (parsed already: {parsed})")
        yield
        self.events.append("/parse")

    def on_validate(self) -> Iterator[None]:
        known = self.execution_context.pre_execution_errors
        self.events.append(f"validate (errors known: {known})")
        yield
        self.events.append("/validate")

    def on_execute(self) -> Iterator[None]:
        self.events.append("execute")
        yield
        self.events.append("/execute")


async def test_an_extension_runs_each_hook_once_inside_the_schemas_own_stages() -> None:
    # given a schema with an extension hooking every stage, and a document no other test sends
    schema = build_schema(extensions=[Recording])
    document = "query StagesInOrder { __typename }"
    Recording.events = []

    # when the document is executed twice
    first = await schema.execute(document)
    second = await schema.execute(document)

    # then both answer, and each hook ran once per operation in strawberry's order; our stages ran first: the
    # document cache had parsed it before the extension's parse hook began, and the second time it had found it
    # valid before its validation hook began
    assert first.data == second.data == {"__typename": "Query"}
    assert first.errors is None and second.errors is None
    assert Recording.events == [
        "operation", "parse (parsed already: True)", "/parse", "validate (errors known: None)", "/validate",
        "execute", "/execute", "/operation",
        "operation", "parse (parsed already: True)", "/parse", "validate (errors known: [])", "/validate",
        "execute", "/execute", "/operation",
    ]


async def test_a_refused_document_stops_before_execution_with_an_extension_too() -> None:
    # given a schema with an extension, and a document that does not validate
    schema = build_schema(extensions=[Recording])
    Recording.events = []

    # when it is executed
    result = await schema.execute("query StagesRefused { noSuchField }")

    # then it is refused with a validation error, and no execution stage began
    assert result.errors and (result.errors[0].extensions or {}).get("code") == "GRAPHQL_VALIDATION_FAILED"
    assert "execute" not in Recording.events and Recording.events[-1] == "/operation"
