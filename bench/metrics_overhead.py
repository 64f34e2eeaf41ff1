"""What do the metrics cost on the hot path? Per operation and per HTTP request, with and without them.

Prints figures; it is not a test. The operation is ``query Q { __typename }``
(no database), executed by our schema counting into a real ``Metrics``,
against the same schema whose stages do not count a valid operation's
execution (graph/schema.py: ``LimitedCachedDocuments.executed``, the only
place one is counted); the request counter is timed through
``CountRequests`` around a bare ASGI app. Best of 5 runs, and Python calls
per operation (cProfile), which a busy machine does not blur.

    python bench/metrics_overhead.py [--rounds 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from typing import Any

from starlette.types import Message, Receive, Scope, Send
from strawberry.types import ExecutionContext

from graph.context import Context
from graph.schema import LimitedCachedDocuments, Mutation, PortraitsExecutionContext, PortraitsSchema, Query
from graph.schema import schema as counted_schema
from graph.stages import Stages
from graph.subscriptions import Subscription
from server.metrics import Metrics
from server.metrics_http import CountRequests

QUERY = "query Q { __typename }"


class Uncounted(LimitedCachedDocuments):
    """Our stages without counting a valid operation's execution."""

    def executed(self, execution: ExecutionContext, *, failed: bool) -> None:
        pass


class UncountedSchema(PortraitsSchema):
    stages: Stages = Uncounted()


def uncounted_schema() -> PortraitsSchema:
    return UncountedSchema(
        query=Query, mutation=Mutation, subscription=Subscription, execution_context_class=PortraitsExecutionContext
    )


async def calls_per_operation(schema: PortraitsSchema, context: object, rounds: int) -> float:
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(rounds):
        await schema.execute(QUERY, context_value=context)
    profile.disable()
    return float(pstats.Stats(profile).total_calls) / rounds  # type: ignore[attr-defined]  # (untyped in typeshed)


async def per_operation_us(schema: PortraitsSchema, context: object, rounds: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds):
            result = await schema.execute(QUERY, context_value=context)
            assert result.errors is None
        best = min(best, time.perf_counter() - started)
    return best / rounds * 1e6


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def per_request_us(app: Any, rounds: int) -> float:
    scope: Scope = {"type": "http", "path": "/graphql"}

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        pass

    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds):
            await app(dict(scope), receive, send)
        best = min(best, time.perf_counter() - started)
    return best / rounds * 1e6


async def main(rounds: int) -> None:
    metrics = Metrics()
    # A Context the extension records through; the fields the query never reads are left unset.
    context = Context.__new__(Context)
    context.metrics = metrics
    uncounted = uncounted_schema()
    plain = await per_operation_us(uncounted, context, rounds)
    counted = await per_operation_us(counted_schema, context, rounds)
    print(f"operation  without metrics {plain:7.1f} us   with {counted:7.1f} us   (+{counted - plain:.1f} us)")
    plain_calls = await calls_per_operation(uncounted, context, rounds // 10)
    counted_calls = await calls_per_operation(counted_schema, context, rounds // 10)
    print(f"           {plain_calls:.0f} Python calls per operation without, {counted_calls:.0f} with")
    bare = await per_request_us(bare_app, rounds * 10)
    wrapped = await per_request_us(CountRequests(bare_app, metrics), rounds * 10)
    print(f"request    without counter {bare:7.2f} us   with {wrapped:7.2f} us   (+{wrapped - bare:.2f} us)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5000)
    asyncio.run(main(parser.parse_args().rounds))
