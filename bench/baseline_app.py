"""A hand-written Starlette + asyncpg endpoint doing what `characters(first: 100)` does, minus GraphQL.

It is the yardstick for bench/list_characters.py: the same bearer-token check
(pyjwt, HS256, audience "authenticated"), the same SQL on an asyncpg pool of
the same size, and the same JSON shape encoded with orjson, so the gap between
the two servers is what the GraphQL layer (parsing, validation, resolvers,
Strawberry's response building) costs.

Configured by environment, because uvicorn imports it by name:
BENCH_DSN (required), BENCH_JWT_SECRET (required), BENCH_POOL_SIZE (default 10,
the real server's DATABASE_POOL_SIZE default). Run with
``python -m uvicorn bench.baseline_app:app`` from the repository root.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypedDict
from uuid import UUID

import asyncpg
import jwt
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

LIST_SQL = "SELECT id, name, description FROM characters WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT 100"
ALGORITHM = "HS256"
AUDIENCE = "authenticated"
JSON = "application/json"


class State(TypedDict):
    """What the lifespan opens, handed to every request as ``request.state``."""

    pool: asyncpg.Pool
    secret: str


def _unauthenticated(message: str) -> Response:
    """401 with a GraphQL-shaped body, as the real server answers a bad token."""
    body = {"data": None, "errors": [{"message": f"Unauthenticated: {message}"}]}
    return Response(orjson.dumps(body), status_code=401, media_type=JSON)


async def list_characters(request: Request) -> Response:
    """Verify the token, read the body, run the one query, encode the GraphQL-shaped answer."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return _unauthenticated("Authorization header must be 'Bearer <token>'")
    try:
        claims = jwt.decode(
            token,
            request.state.secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            options={"require": ["exp", "sub", "aud"]},
        )
        user_id = UUID(str(claims["sub"]))
    except (jwt.InvalidTokenError, ValueError):
        return _unauthenticated("invalid token")
    # The GraphQL server must read and parse its body; do the same so the comparison is fair.
    payload: Any = orjson.loads(await request.body())
    if not isinstance(payload, dict) or "query" not in payload:
        return Response(b'{"errors":[{"message":"no query"}]}', status_code=400, media_type=JSON)
    rows = await request.state.pool.fetch(LIST_SQL, user_id)
    edges = [{"node": {"id": str(row["id"]), "name": row["name"], "description": row["description"]}} for row in rows]
    return Response(orjson.dumps({"data": {"characters": {"edges": edges}}}), media_type=JSON)


async def healthz(request: Request) -> Response:
    """200 once the pool answers, so the benchmark knows when to start."""
    await request.state.pool.fetchval("SELECT 1")
    return Response(b'{"status":"ok"}', media_type=JSON)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[State]:
    """One pool per process, sized like the real server's (min 1, max DATABASE_POOL_SIZE's default)."""
    pool = await asyncpg.create_pool(
        os.environ["BENCH_DSN"], min_size=1, max_size=int(os.environ.get("BENCH_POOL_SIZE", "10"))
    )
    assert pool is not None
    try:
        yield {"pool": pool, "secret": os.environ["BENCH_JWT_SECRET"]}
    finally:
        await pool.close()


app = Starlette(
    routes=[
        Route("/graphql", list_characters, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ],
    lifespan=lifespan,
)
