"""Realtime subscriptions: thin wrappers over resolvers/subscriptions.py.

Every item is resolved with fresh per-request loaders: a websocket's context
lives as long as the connection, and a cached load would show a row as it was
at the first event.

Names follow one scheme, ``{subject}Changed``: the subject is the object each
event carries (a Job, a Character's image), in the singular, and arguments
narrow which ones. The first names mixed events and nouns (``jobUpdated``,
``characterImageUpdated``, ``portraitJobs``); they stay, deprecated, each
the same resolver as its new name, so both answer alike.
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

JOB_CHANGED = (
    "The job's current state first, then each change; completes after COMPLETED, FAILED or CANCELED. "
    "NOT_FOUND for a missing or foreign id."
)
CHARACTER_IMAGE_CHANGED = (
    "The character, with a fresh signedImageUrl, each time its image changes; without characterId, "
    "for every character of the viewer. NOT_FOUND for a missing or foreign id."
)
PORTRAIT_JOB_CHANGED = "Every CHARACTER_PORTRAIT job of the viewer, each time it changes."


def _renamed(new_name: str) -> str:
    return f"Use {new_name}: the same events under the {{subject}}Changed name every subscription follows."


async def job_changes(
    info: Info[Context, None], id: JobId  # noqa: A002 - the GraphQL argument is named id
) -> AsyncGenerator[JobType, None]:
    context = info.context
    updates = subscriptions.job_updates(
        context.pool, context.events, context.require_viewer(), context.subscription_limits, job_id=parse_id(id)
    )
    async for job in updates:
        context.refresh_loaders()
        yield JobType.from_model(job)


async def character_image_changes(
    info: Info[Context, None], character_id: WatchedCharacterId = None
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


async def portrait_job_changes(info: Info[Context, None]) -> AsyncGenerator[JobType, None]:
    context = info.context
    updates = subscriptions.portrait_job_updates(
        context.pool, context.events, context.require_viewer(), context.subscription_limits
    )
    async for job in updates:
        context.refresh_loaders()
        yield JobType.from_model(job)


@strawberry.type(
    description="Live updates over a websocket at /graphql (graphql-transport-ws, or the legacy graphql-ws); "
    "each needs a token, as queries do. Names are {subject}Changed; the older names are deprecated aliases."
)
class Subscription:
    job_changed = strawberry.subscription(resolver=job_changes, description=JOB_CHANGED)
    character_image_changed = strawberry.subscription(
        resolver=character_image_changes, description=CHARACTER_IMAGE_CHANGED
    )
    portrait_job_changed = strawberry.subscription(
        resolver=portrait_job_changes, description=PORTRAIT_JOB_CHANGED
    )
    job_updated = strawberry.subscription(
        resolver=job_changes, description=JOB_CHANGED, deprecation_reason=_renamed("jobChanged")
    )
    character_image_updated = strawberry.subscription(
        resolver=character_image_changes,
        description=CHARACTER_IMAGE_CHANGED,
        deprecation_reason=_renamed("characterImageChanged"),
    )
    portrait_jobs = strawberry.subscription(
        resolver=portrait_job_changes,
        description=PORTRAIT_JOB_CHANGED,
        deprecation_reason=_renamed("portraitJobChanged"),
    )
