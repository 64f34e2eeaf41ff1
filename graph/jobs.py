"""Generation queries and mutations: thin wrappers over resolvers/jobs.py."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from graph.context import Context
from graph.types.job import GenerateCharacterPortraitInput, GenerateImageInput, JobStatus, JobType
from graph.types.pagination import Connection
from resolvers import jobs
from resolvers.jobs import GenerationOptions


def _options(input: GenerateCharacterPortraitInput | GenerateImageInput) -> GenerationOptions:  # noqa: A002
    return GenerationOptions(
        model_id=None if input.model_id is None else str(input.model_id), quality=input.quality.value, seed=input.seed
    )


@strawberry.type
class JobQuery:
    @strawberry.field(description="One of the viewer's jobs; NOT_FOUND for a missing or foreign id.")
    async def job(self, info: Info[Context, None], id: strawberry.ID) -> JobType | None:  # noqa: A002
        job = await jobs.get_job(info.context.loaders.job_by_id.load, job_id=id)
        return JobType.from_model(job)

    @strawberry.field(description="The viewer's jobs, newest first, optionally of one status. `first` is 1-100 (default 20).")
    async def jobs(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None, status: JobStatus | None = None
    ) -> Connection[JobType] | None:
        context = info.context
        page = await jobs.list_jobs(
            context.pool, context.require_viewer(), first=first, after=after, status=None if status is None else status.value
        )
        return Connection.from_page(page, JobType.from_model)


@strawberry.type
class JobMutation:
    @strawberry.mutation(
        description="Queue a portrait for a character (or a draft) and return the job at once; RATE_LIMITED when "
        "too many of the viewer's jobs are queued or running."
    )
    async def generate_character_portrait(
        self, info: Info[Context, None], input: GenerateCharacterPortraitInput  # noqa: A002
    ) -> JobType | None:
        context = info.context
        draft = None if input.draft is None else {
            "name": input.draft.name,
            "description": input.draft.description,
            "appearance_tags": input.draft.appearance_tags,
            "traits": input.draft.traits,
            "persona": input.draft.persona,
            "gender": input.draft.gender,
        }
        job = await jobs.generate_character_portrait(
            context.pool, context.require_viewer(), context.job_policy,
            character_id=None if input.character_id is None else str(input.character_id),
            draft=draft, options=_options(input),
        )
        return JobType.from_model(job)

    @strawberry.mutation(description="Queue a free-form image for the workspace and return the job at once.")
    async def generate_image(self, info: Info[Context, None], input: GenerateImageInput) -> JobType | None:  # noqa: A002
        context = info.context
        job = await jobs.generate_image(
            context.pool, context.require_viewer(), context.job_policy, prompt=input.prompt, options=_options(input)
        )
        return JobType.from_model(job)

    @strawberry.mutation(description="Cancel a queued or running job (its provider request too); returns the job.")
    async def cancel_job(self, info: Info[Context, None], id: strawberry.ID) -> JobType | None:  # noqa: A002
        context = info.context
        job = await jobs.cancel_job(context.pool, context.require_viewer(), job_id=id)
        return JobType.from_model(job)
