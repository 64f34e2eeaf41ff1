"""Generation queries and mutations: thin wrappers over resolvers/jobs.py."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types import Info

from graph.arguments import OMITTED, given
from graph.context import Context
from graph.ids import JobId, parse_id, parse_optional_id
from graph.selections import connection_selection
from graph.types.enums import JobStatus
from graph.types.job import GenerateCharacterPortraitInput, GenerateImageInput, JobType
from graph.types.pagination import After, Connection, First
from resolvers import jobs
from resolvers.jobs import GenerationOptions


def _options(data: GenerateCharacterPortraitInput | GenerateImageInput) -> GenerationOptions:
    return GenerationOptions(
        model_id=parse_optional_id(data.model_id, field="model_id"), quality=data.quality, seed=data.seed,
        use_reference=isinstance(data, GenerateCharacterPortraitInput) and data.use_reference,
    )


@strawberry.type
class JobQuery:
    @strawberry.field(description="One of the viewer's jobs; NOT_FOUND for a missing or foreign id.")
    async def job(
        self, info: Info[Context, None], id: JobId  # noqa: A002 - the GraphQL argument's name
    ) -> JobType | None:
        load = info.context.loaders.job_by_id.load  # UNAUTHENTICATED before any check of the id
        job = await jobs.get_job(load, job_id=parse_id(id))
        return JobType.from_model(job)

    @strawberry.field(
        description="The viewer's jobs, newest first, optionally of one status. `first` is 1-100 (default 20)."
    )
    async def jobs(
        self,
        info: Info[Context, None],
        first: First = OMITTED,
        after: After = OMITTED,
        status: Annotated[
            JobStatus | None, strawberry.argument(description="Only jobs with this status; every job when omitted.")
        ] = OMITTED,
    ) -> Connection[JobType] | None:
        context = info.context
        viewer = context.require_viewer()
        status = given(status)
        page = await jobs.list_jobs(
            context.pool, viewer, first=given(first), after=given(after), status=status,
            with_cursors=connection_selection(info).needs_cursors,
        )
        return Connection.from_page(
            page, JobType.from_model, counter=lambda: jobs.count_jobs(context.pool, viewer, status=status)
        )


@strawberry.type
class JobMutation:
    @strawberry.mutation(
        description="Queue a portrait for a character (or a draft) and return the job at once; RATE_LIMITED when "
        "too many of the viewer's jobs are queued or running."
    )
    async def generate_character_portrait(
        self,
        info: Info[Context, None],
        input: Annotated[  # noqa: A002 - the GraphQL argument's name
            GenerateCharacterPortraitInput, strawberry.argument(description="Whose portrait, and how to make it.")
        ],
    ) -> JobType | None:
        context = info.context
        viewer = context.require_viewer()
        draft = None if input.draft is None else {
            "name": input.draft.name,
            "description": input.draft.description,
            "appearance_tags": input.draft.appearance_tags,
            "traits": input.draft.traits,
            "persona": input.draft.persona,
            "gender": input.draft.gender,
        }
        job = await jobs.generate_character_portrait(
            context.pool, viewer, context.job_policy,
            character_id=parse_optional_id(input.character_id, field="id"),
            draft=draft, options=_options(input),
        )
        return JobType.from_model(job)

    @strawberry.mutation(description="Queue a free-form image for the workspace and return the job at once.")
    async def generate_image(
        self,
        info: Info[Context, None],
        input: Annotated[  # noqa: A002 - the GraphQL argument's name
            GenerateImageInput, strawberry.argument(description="The prompt, and how to make the image.")
        ],
    ) -> JobType | None:
        context = info.context
        viewer = context.require_viewer()
        job = await jobs.generate_image(
            context.pool, viewer, context.job_policy, prompt=input.prompt, options=_options(input),
            character_id=parse_optional_id(input.character_id, field="character_id"),
        )
        return JobType.from_model(job)

    @strawberry.mutation(description="Cancel a queued or running job (its provider request too); returns the job.")
    async def cancel_job(
        self, info: Info[Context, None], id: JobId  # noqa: A002 - the GraphQL argument's name
    ) -> JobType | None:
        context = info.context
        viewer = context.require_viewer()
        job = await jobs.cancel_job(context.pool, viewer, job_id=parse_id(id))
        return JobType.from_model(job)
