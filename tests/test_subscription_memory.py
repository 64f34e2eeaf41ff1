"""A long-lived subscription must not keep memory per event it sends (pure execution, no I/O)."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import AsyncGenerator

import strawberry

from graph.schema import PortraitsExecutionContext

EVENTS = 3000


@strawberry.type
class Item:
    id: strawberry.ID
    image_url: str


@strawberry.type
class Query:
    ping: int = 0


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def items(self) -> AsyncGenerator[Item, None]:
        for number in range(2 * EVENTS + 10):
            yield Item(id=strawberry.ID("x"), image_url=f"user-library/{number}.png")


async def retained_bytes_per_event(schema: strawberry.Schema) -> float:
    stream = await schema.subscribe("subscription { items { id imageUrl } }")
    assert not isinstance(stream, type(None))
    received = 0
    before = after = None
    async for result in stream:
        assert not result.errors, result.errors
        received += 1
        if received == EVENTS:
            gc.collect()  # what is retained, not what awaits the cycle collector
            tracemalloc.start()
            before = tracemalloc.take_snapshot()
        elif received == 2 * EVENTS:
            gc.collect()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            break
    assert before is not None and after is not None
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return growth / EVENTS


async def test_our_execution_context_keeps_nothing_per_event() -> None:
    # given the same subscription on strawberry's default execution context and on ours
    plain = strawberry.Schema(query=Query, subscription=Subscription)
    ours = strawberry.Schema(query=Query, subscription=Subscription, execution_context_class=PortraitsExecutionContext)
    # when each sends thousands of events, then ours keeps (next to) nothing per event
    assert await retained_bytes_per_event(ours) < 50
    # and the default one's growth, which this guards against, is real (if graphql-core fixes it, drop the subclass)
    assert await retained_bytes_per_event(plain) > 200, "graphql-core no longer leaks: PortraitsExecutionContext can go"
