"""A generation job as clients see it: status, provider progress, and what it produced."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.types import Info

from graph.context import Context
from graph.types.assets import LibraryAssetType, WorkspaceAssetType
from graph.types.character import CharacterType
from graph.types.enums import JobAttemptOutcome, JobDestination, JobStatus, Quality
from storage.job_attempts import JobAttempt
from storage.jobs import Job


@strawberry.type(name="ProviderProgress", description="What the image provider last said about the request.")
class ProviderProgressType:
    status: str = strawberry.field(description="The provider's word: IN_QUEUE, IN_PROGRESS or COMPLETED.")
    queue_position: int | None = strawberry.field(description="Place in the provider's queue, when it gives one.")


@strawberry.type(
    name="JobAttempt",
    description=(
        "One run of a job by a worker. Which worker, host and process ran it is kept for operators"
        " (the job_attempts table, and their metrics), never shown here."
    ),
)
class JobAttemptType:
    number: int = strawberry.field(
        description=(
            "1 for the job's first attempt, then 2, ... Attempts a stopping worker handed back (RELEASED) are"
            " numbered here but not counted in Job.attempts."
        )
    )
    started_at: datetime
    finished_at: datetime | None = strawberry.field(description="Null while the attempt runs.")
    outcome: JobAttemptOutcome
    retryable: bool | None = strawberry.field(
        description="For a FAILED attempt: whether another attempt could succeed; null for other outcomes."
    )
    error: str | None = strawberry.field(description="Why the attempt did not complete.")

    @classmethod
    def from_model(cls, attempt: JobAttempt) -> JobAttemptType:
        return cls(
            number=attempt.number,
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
            outcome=attempt.outcome,
            retryable=attempt.retryable,
            error=attempt.error,
        )


@strawberry.type(name="Job", description="One image generation.")
class JobType:
    id: strawberry.ID
    status: JobStatus
    destination: JobDestination
    character_id: strawberry.ID | None = strawberry.field(
        description="The character the portrait is for; null for a draft not yet attached by createCharacter."
    )
    is_draft: bool = strawberry.field(description="A portrait generated before its character exists.")
    model_key: str
    prompt: str
    quality: Quality
    seed: int | None = strawberry.field(description="The requested seed, then the one the image was made with.")
    attempts: int
    max_attempts: int
    error: str | None = strawberry.field(description="Why the last attempt failed (the job may still be retried).")
    provider_progress: ProviderProgressType | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    model: strawberry.Private[Job]

    @strawberry.field(description="The character the portrait is for.")
    async def character(self, info: Info[Context, None]) -> CharacterType | None:
        if self.model.character_id is None:
            return None
        character = await info.context.loaders.character_by_id.load(self.model.character_id)
        return None if character is None else CharacterType.from_model(character)

    @strawberry.field(
        description=(
            "Each attempt at the job, oldest first: when it ran, how it ended and why. Which worker and host ran"
            " it is for operators only and is not exposed here."
        )
    )
    async def attempt_history(self, info: Info[Context, None]) -> list[JobAttemptType]:
        attempts = await info.context.loaders.job_attempts_by_job_id.load(self.model.id)
        return [JobAttemptType.from_model(attempt) for attempt in attempts]

    @strawberry.field(description="The generated image in workspace-temp, once stored (a draft's preview).")
    async def workspace_asset(self, info: Info[Context, None]) -> WorkspaceAssetType | None:
        asset = await info.context.loaders.workspace_asset_by_job_id.load(self.model.id)
        return None if asset is None else WorkspaceAssetType.from_model(asset)

    @strawberry.field(description="The library copy, once auto-saved (character portraits) or saved.")
    async def library_asset(self, info: Info[Context, None]) -> LibraryAssetType | None:
        asset = await info.context.loaders.library_asset_by_job_id.load(self.model.id)
        return None if asset is None else LibraryAssetType.from_model(asset)

    @classmethod
    def from_model(cls, job: Job) -> JobType:
        progress = None
        if job.provider_status is not None:
            progress = ProviderProgressType(status=job.provider_status, queue_position=job.queue_position)
        return cls(
            model=job,
            id=strawberry.ID(str(job.id)),
            status=job.status,
            destination=job.destination,
            character_id=None if job.character_id is None else strawberry.ID(str(job.character_id)),
            is_draft=job.is_draft,
            model_key=job.model_key,
            prompt=job.prompt,
            quality=job.quality,
            seed=job.seed,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            error=job.error,
            provider_progress=progress,
            created_at=job.created_at,
            started_at=job.started_at,
            completed_at=job.completed_at,
            updated_at=job.updated_at,
        )


@strawberry.input(description="A character that does not exist yet: the fields its portrait prompt is built from.")
class PortraitDraftInput:
    name: str
    description: str
    appearance_tags: list[str] | None = None
    traits: str | None = None
    persona: str | None = None
    gender: str | None = None


@strawberry.input(
    description="Generate a portrait for characterId, or for a draft (then pass the job to createCharacter)."
)
class GenerateCharacterPortraitInput:
    character_id: strawberry.ID | None = None
    draft: PortraitDraftInput | None = None
    model_id: strawberry.ID | None = strawberry.field(
        default=None, description="An ImageModel id; the default model when omitted."
    )
    quality: Quality = Quality.HIGH
    seed: int | None = strawberry.field(default=None, description="0 to 2147483647; random when omitted.")


@strawberry.input(description="Generate a free-form image into the workspace.")
class GenerateImageInput:
    prompt: str = strawberry.field(description="1-2000 characters.")
    model_id: strawberry.ID | None = None
    quality: Quality = Quality.HIGH
    seed: int | None = None
