"""Realtime subscriptions: thin wrappers over resolvers/subscriptions.py.

Every item is resolved with fresh per-request loaders: a websocket's context
lives as long as the connection, and a cached load would show a row as it was
at the first event.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated

import strawberry
from strawberry.types import Info

from graph.context import Context
from graph.ids import JobId, parse_id, parse_optional_id
from graph.types.character import CharacterType
from graph.types.job import JobType
from resolvers import subscriptions

WatchedCharacterId = Annotated[
    strawberry.ID | None,
    strawberry.argument(description="One of your characters (a UUID); every character of yours when omitted."),
]


@strawberry.type(
    description="Live updates over a websocket at /graphql (graphql-transport-ws, or the legacy graphql-ws); "
    "each needs a token, as queries do."
)
class Subscription:
    @strawberry.subscription(
        description="The job's current state first, then each change; completes after COMPLETED, FAILED or CANCELED. "
        "NOT_FOUND for a missing or foreign id."
    )
    async def job_updated(self, info: Info[Context, None], id: JobId) -> AsyncGenerator[JobType, None]:  # noqa: A002 - the GraphQL argument is named id
        context = info.context
        updates = subscriptions.job_updates(
            context.pool, context.events, context.require_viewer(), context.subscription_limits, job_id=parse_id(id)
        )
        async for job in updates:
            context.refresh_loaders()
            yield JobType.from_model(job)

    @strawberry.subscription(
        description="The character, with a fresh signedImageUrl, each time its image changes; without characterId, "
        "for every character of the viewer. NOT_FOUND for a missing or foreign id."
    )
    async def character_image_updated(
        self, info: Info[Context, None], character_id: WatchedCharacterId = None
    ) -> AsyncGenerator[CharacterType, None]:
        context = info.context
        updates = subscriptions.character_image_updates(
            context.pool, context.events, context.require_viewer(), context.subscription_limits,
            character_id=parse_optional_id(character_id, field="characterId"),
        )
        async for character in updates:
            context.refresh_loaders()
            yield CharacterType.from_model(character)
            del character  # an idle subscription holds no row

    @strawberry.subscription(description="Every CHARACTER_PORTRAIT job of the viewer, each time it changes.")
    async def portrait_jobs(self, info: Info[Context, None]) -> AsyncGenerator[JobType, None]:
        context = info.context
        updates = subscriptions.portrait_job_updates(
            context.pool, context.events, context.require_viewer(), context.subscription_limits
        )
        async for job in updates:
            context.refresh_loaders()
            yield JobType.from_model(job)
