"""What completing a page of 100 characters costs in-process: graphql-core, the closure plans, the generated plans.

Prints figures; it is not a test. No database and no HTTP: a small strawberry schema whose root field hands back
one page of 100 ``Character`` rows built once (the app's own types: ``Connection[CharacterType]``, rows as
storage makes them, edges without cursors as the real resolver makes them when no cursor is selected), executed
through the app's executor class (graph/schema.py) with graphql-core's ``execute``, each way in turn, in
interleaved rounds. The figure is this process's CPU time per execution (the machine may be shared): the executor
built, the root resolver awaited, the page completed; best and median round. ``{ __typename }`` beside it is what
an execution costs with nothing to complete. --profile runs one way under cProfile instead.

    python bench/plan_completion.py [--rounds 7] [--iterations 300] [--profile off|closure|generated [--document]]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import strawberry
from asyncpg.pgproto.pgproto import UUID
from graphql import DocumentNode, ExecutionResult, GraphQLSchema, execute, parse

from graph.plans import PlanCache
from graph.schema import PortraitsExecutionContext
from graph.types.character import CharacterType
from graph.types.pagination import Connection
from resolvers.pagination import Page
from storage.characters import Character
from storage.enums import ContentRating

PAGE = "query { characters(first: 100) { edges { node { id name description } } } }"
FULL = """query { characters(first: 100) { edges { node {
  id name description appearanceTags traits persona gender contentRating seedLocked createdAt updatedAt __typename
} } pageInfo { hasNextPage endCursor } } }"""
EMPTY = "{ __typename }"
DOCUMENTS = {"page": PAGE, "page, 12 fields + pageInfo": FULL, "{ __typename }": EMPTY}


def rows(count: int) -> list[Character]:
    """Rows as storage hands them back: asyncpg's own UUID class (its str() is C), the stored enum, datetimes."""
    owner = UUID(str(uuid.uuid4()))
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return [
        Character(
            id=UUID(str(uuid.uuid4())), user_id=owner, name=f"Character {n}",
            description=f"The description of character {n}.",
            appearance_tags=("tall", "red hair"), traits=None, persona="calm", gender=None,
            content_rating=ContentRating.SFW, scene_behavior_rules=None, image_url=None, reference_image_url=None,
            seed_locked=None, created_at=start + timedelta(seconds=n), updated_at=start + timedelta(seconds=n),
        )
        for n in range(count)
    ]


async def _no_count() -> int:
    return 0


# Made once, as the real resolver makes it per request: only its completion is measured.
CONNECTION = Connection.from_page(
    Page(items=rows(100), cursors=None, has_next_page=True, has_previous_page=False),
    CharacterType.from_model, counter=_no_count,
)


@strawberry.type
class BenchQuery:
    @strawberry.field
    async def characters(self, first: int | None = None) -> Connection[CharacterType] | None:
        del first
        return CONNECTION


CAPTURED: list[GraphQLSchema] = []


class _Capture(PortraitsExecutionContext):
    """Keeps the graphql-core schema strawberry built (the executor's public ``schema``)."""

    def execute_operation(self, serially: bool | None = None) -> Any:
        CAPTURED.append(self.schema)
        return super().execute_operation(serially)


def graphql_schema() -> GraphQLSchema:
    strawberry.Schema(query=BenchQuery, execution_context_class=_Capture).execute_sync(EMPTY)
    return CAPTURED[0]


@dataclass
class BenchContext:
    """What the executor reads of a context (graph/context.py's Context has the same field)."""

    plans: PlanCache | None


WAYS: dict[str, PlanCache | None] = {
    "graphql-core (plans off)": None,
    "plans, closures": PlanCache(generate=False),
    "plans, generated": PlanCache(generate=True),
}


async def run_once(schema: GraphQLSchema, document: DocumentNode, context: BenchContext) -> ExecutionResult:
    result = execute(schema, document, context_value=context, executor_class=PortraitsExecutionContext)
    if isinstance(result, Awaitable):
        result = await result
    assert isinstance(result, ExecutionResult)
    return result


async def measure(schema: GraphQLSchema, document: DocumentNode, context: BenchContext, iterations: int) -> float:
    start = time.process_time()
    for _ in range(iterations):
        await run_once(schema, document, context)
    return (time.process_time() - start) / iterations * 1e6


async def main(args: argparse.Namespace) -> None:
    schema = graphql_schema()
    documents = {name: parse(text) for name, text in DOCUMENTS.items()}
    for name, document in documents.items():
        answers = [await run_once(schema, document, BenchContext(plans)) for plans in WAYS.values()]
        assert all(answer == answers[0] for answer in answers), f"{name}: the ways answer differently"
        assert answers[0].errors is None, answers[0].errors
    if args.profile:
        plans = {"off": None, "closure": WAYS["plans, closures"], "generated": WAYS["plans, generated"]}[args.profile]
        profiler = cProfile.Profile()
        profiler.enable()
        await measure(schema, documents[args.document], BenchContext(plans), args.iterations)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        return
    print(f"us per execution, {args.rounds} interleaved rounds of {args.iterations}; best / median round")
    for name, document in documents.items():
        figures: dict[str, list[float]] = {way: [] for way in WAYS}
        for _ in range(args.rounds):
            for way, plans in WAYS.items():
                figures[way].append(await measure(schema, document, BenchContext(plans), args.iterations))
        print(name)
        for way, values in figures.items():
            print(f"  {way:28} {min(values):8.1f} {statistics.median(values):8.1f}")
    for way, plans in WAYS.items():
        if plans is not None:
            print(f"{way}: {plans.stats}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--profile", choices=("off", "closure", "generated"), default=None,
                        help="profile one way instead of timing every way")
    parser.add_argument("--document", choices=tuple(DOCUMENTS), default=next(iter(DOCUMENTS)),
                        help="the document --profile runs")
    asyncio.run(main(parser.parse_args()))
