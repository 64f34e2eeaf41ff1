"""A hand-written Starlette + asyncpg endpoint doing what `characters(first: 100)` does, minus GraphQL.

It is the yardstick for bench/list_characters.py: the same bearer-token check
(pyjwt, HS256, audience "authenticated"), the same SQL on an asyncpg pool of
the same size, and the same JSON shape encoded with orjson, so the gap between
the two servers is what the GraphQL layer (parsing, validation, resolvers,
Strawberry's response building) costs.

With BENCH_SIGNED=1 each node also carries ``signedImageUrl {url expiresAt}``,
checked against the ``stored_objects`` catalog in the same statement and
signed through the project's own ``resolvers.images.signed_image`` and
UrlSigner, so the URLs are byte-identical to the real server's.

Configured by environment, because uvicorn imports it by name:
BENCH_DSN (required), BENCH_JWT_SECRET (required), BENCH_POOL_SIZE (default 10,
the real server's DATABASE_POOL_SIZE default), BENCH_SIGNED ("1" to sign, default
off) and BENCH_PUBLIC_URL (the real server's PUBLIC_URL; needed when signing).
Run with ``python -m uvicorn bench.baseline_app:app`` from the repository root.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TypedDict
from uuid import UUID

import asyncpg
import jwt
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from resolvers.images import signed_image
from storage.objects.local import LocalObjectStore
from storage.objects.paths import DEFAULT_BUCKET
from storage.objects.signing import DEFAULT_TTL_SECONDS, SigningPolicy, UrlSigner
from storage.objects.tokens import ObjectTokens, derive_key

LIST_SQL = "SELECT id, name, description FROM characters WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT 100"
# The real server's catalog probe for image_url (storage.characters), in the same statement.
SIGNED_LIST_SQL = f"""SELECT c.id, c.name, c.description, c.image_url,
    ARRAY(SELECT o.key FROM stored_objects o WHERE o.key IN (c.image_url, '{DEFAULT_BUCKET.value}/' || c.image_url))
        AS stored_keys
FROM characters c WHERE c.user_id = $1 ORDER BY c.created_at DESC, c.id DESC LIMIT 100"""
ALGORITHM = "HS256"
AUDIENCE = "authenticated"
JSON = "application/json"


class State(TypedDict):
    """What the lifespan opens, handed to every request as ``request.state``."""

    pool: asyncpg.Pool
    secret: str
    signer: UrlSigner | None  # None: plain mode, no signedImageUrl


def _signed_image_url(
    reference: str | None, user_id: UUID, stored_keys: Sequence[str], signer: UrlSigner
) -> dict[str, str | None] | None:
    """``signedImageUrl`` as the real server answers it, by the same rules (``resolvers.images.signed_image``)."""
    signed = signed_image(reference, owner_id=user_id, stored_keys=stored_keys, signer=signer)
    if signed is None:
        return None
    # Strawberry's DateTime scalar serializes with isoformat(); do the same so the JSON is identical.
    return {"url": signed.url, "expiresAt": None if signed.expires_at is None else signed.expires_at.isoformat()}


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
    signer: UrlSigner | None = request.state.signer
    if signer is None:
        rows = await request.state.pool.fetch(LIST_SQL, user_id)
        edges = [
            {"node": {"id": str(row["id"]), "name": row["name"], "description": row["description"]}} for row in rows
        ]
    else:
        rows = await request.state.pool.fetch(SIGNED_LIST_SQL, user_id)
        edges = [
            {
                "node": {
                    "id": str(row["id"]),
                    "name": row["name"],
                    "description": row["description"],
                    "signedImageUrl": _signed_image_url(row["image_url"], user_id, row["stored_keys"], signer),
                }
            }
            for row in rows
        ]
    return Response(orjson.dumps({"data": {"characters": {"edges": edges}}}), media_type=JSON)


async def healthz(request: Request) -> Response:
    """200 once the pool answers, so the benchmark knows when to start."""
    await request.state.pool.fetchval("SELECT 1")
    return Response(b'{"status":"ok"}', media_type=JSON)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release reset query; this app leaves no session state behind."""


def _signer(secret: str, objects_dir: Path) -> UrlSigner:
    """The real server's local-store signer: same public URL, same derived key, default TTLs and window."""
    tokens = ObjectTokens(derive_key(secret))
    store = LocalObjectStore(objects_dir, public_url=os.environ["BENCH_PUBLIC_URL"], tokens=tokens)
    return UrlSigner(store, SigningPolicy(ttl_seconds=DEFAULT_TTL_SECONDS))


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[State]:
    """One pool per process, sized like the real server's (min 1, max DATABASE_POOL_SIZE's default)."""
    secret = os.environ["BENCH_JWT_SECRET"]
    with ExitStack() as stack:
        signer = None
        if os.environ.get("BENCH_SIGNED") == "1":
            # Signing only reads the catalog; the store wants a root folder all the same.
            objects_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="portraits-bench-baseline-objects-"))
            signer = _signer(secret, Path(objects_dir))
        # No reset statement on release, as the real server's pool (storage.database), so neither pays
        # a round trip the other does not.
        pool = await asyncpg.create_pool(
            os.environ["BENCH_DSN"],
            min_size=1,
            max_size=int(os.environ.get("BENCH_POOL_SIZE", "10")),
            reset=_keep_session,
        )
        assert pool is not None
        try:
            yield {"pool": pool, "secret": secret, "signer": signer}
        finally:
            await pool.close()


app = Starlette(
    routes=[
        Route("/graphql", list_characters, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ],
    lifespan=lifespan,
)
