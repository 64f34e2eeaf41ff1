"""A generation job as clients see it: status, provider progress, and what it produced."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.types import Info

from graph.context import Context
from graph.types.assets import LibraryAssetType, WorkspaceAssetType
from graph.types.character import CharacterType
from graph.types.enums import JobAttemptOutcome, JobDestination, JobStatus, ProviderStatus, Quality
from resolvers.characters import (
    DESCRIPTION_MAX,
    GENDER_MAX,
    NAME_MAX,
    PERSONA_MAX,
    TAG_MAX,
    TAGS_MAX_COUNT,
    TRAITS_MAX,
)
from resolvers.jobs import MAX_JOB_ATTEMPTS, MAX_SEED
from resolvers.portrait_prompt import MAX_PROMPT_LENGTH
from storage.job_attempts import JobAttempt
from storage.jobs import Job

MODEL_ID_DESCRIPTION = (
    "An ImageModel id; the default model when omitted. A model whose `available` is false is BAD_USER_INPUT."
)
SEED_DESCRIPTION = f"0 to {MAX_SEED}; the provider picks one when omitted (Job.seed then shows it)."


@strawberry.type(name="ProviderProgress", description="What the image provider last said about the request.")
class ProviderProgressType:
    status: ProviderStatus = strawberry.field(description="Where the provider has the request.")
    queue_position: int | None = strawberry.field(description="Place in the provider's queue, when it gives one.")
    percent: int | None = strawberry.field(
        description=(
            "0 to 100: how far the model is, from the last progress bar in the provider's logs (Replicate);"
            " null when it shows none."
        )
    )
    message: str | None = strawberry.field(
        description=(
            "The provider's last log line (Replicate), control characters removed, at most 200 characters;"
            " null when it gave none."
        )
    )


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
    started_at: datetime = strawberry.field(description="When a worker took the job for this attempt (UTC).")
    finished_at: datetime | None = strawberry.field(description="When the attempt ended (UTC); null while it runs.")
    outcome: JobAttemptOutcome = strawberry.field(description="How the attempt ended; RUNNING while it runs.")
    retryable: bool | None = strawberry.field(
        description="For a FAILED attempt: whether another attempt could succeed; null for other outcomes."
    )
    error: str | None = strawberry.field(
        description="Why the attempt did not complete; null for a RUNNING or COMPLETED one."
    )

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
    id: strawberry.ID = strawberry.field(description="The job's id (a UUID), for job, cancelJob and jobChanged.")
    status: JobStatus = strawberry.field(description="Where the job is; COMPLETED, FAILED and CANCELED are final.")
    destination: JobDestination = strawberry.field(description="What the image is for.")
    character_id: strawberry.ID | None = strawberry.field(
        description="The character the portrait is for; null for a draft not yet attached by createCharacter."
    )
    is_draft: bool = strawberry.field(description="A portrait generated before its character exists.")
    model_key: str = strawberry.field(description="The ImageModel.modelKey the job runs on.")
    prompt: str = strawberry.field(
        description=f"The prompt sent to the provider (at most {MAX_PROMPT_LENGTH} characters): the given one, "
        "or the one built from the character."
    )
    quality: Quality = strawberry.field(description="The quality asked for.")
    seed: int | None = strawberry.field(description="The requested seed, then the one the image was made with.")
    attempts: int = strawberry.field(
        description="Attempts made so far (RELEASED ones, handed back by a stopping worker, are not counted)."
    )
    max_attempts: int = strawberry.field(
        description=f"How many attempts the job may take before it FAILED (the server's JOB_MAX_ATTEMPTS, "
        f"at most {MAX_JOB_ATTEMPTS})."
    )
    error: str | None = strawberry.field(description="Why the last attempt failed (the job may still be retried).")
    provider_progress: ProviderProgressType | None = strawberry.field(
        description="What the image provider last said; null until it has said something."
    )
    created_at: datetime = strawberry.field(description="When the job was queued (UTC).")
    started_at: datetime | None = strawberry.field(
        description="When a worker first took it (UTC); null while it is still queued."
    )
    completed_at: datetime | None = strawberry.field(
        description="When it COMPLETED (UTC); null before, and for a failed or canceled job."
    )
    updated_at: datetime = strawberry.field(description="When anything about the job last changed (UTC).")
    reference_image_path: str | None = strawberry.field(
        description="The reference image the model was given, as a storage path (bucket/path, as "
        "Character.referenceImageUrl held it when the job was queued); null for a job without one."
    )
    reference_library_asset_id: strawberry.ID | None = strawberry.field(
        description="The library asset at referenceImagePath, when it was one (null once that asset is deleted)."
    )
    reference_seed: int | None = strawberry.field(
        description="The character's locked seed the job took with its reference (no seed was given); null "
        "otherwise. Job.seed shows the seed the image was made with."
    )
    model: strawberry.Private[Job]

    @strawberry.field(
        description="The character the portrait is for; null for a workspace image, a draft, or a deleted character."
    )
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
            progress = ProviderProgressType(
                status=job.provider_status, queue_position=job.queue_position,
                percent=job.provider_percent, message=job.provider_message,
            )
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
            reference_image_path=job.reference_image_key,
            reference_library_asset_id=(
                None if job.reference_asset_id is None else strawberry.ID(str(job.reference_asset_id))
            ),
            reference_seed=job.reference_seed,
        )


@strawberry.input(description="A character that does not exist yet: the fields its portrait prompt is built from.")
class PortraitDraftInput:
    name: str = strawberry.field(description=f"1-{NAME_MAX} characters, trimmed.")
    description: str = strawberry.field(description=f"1-{DESCRIPTION_MAX} characters, trimmed.")
    appearance_tags: list[str] | None = strawberry.field(
        default=None, description=f"Up to {TAGS_MAX_COUNT} tags of 1-{TAG_MAX} characters."
    )
    traits: str | None = strawberry.field(default=None, description=f"Up to {TRAITS_MAX} characters.")
    persona: str | None = strawberry.field(default=None, description=f"Up to {PERSONA_MAX} characters.")
    gender: str | None = strawberry.field(default=None, description=f"Up to {GENDER_MAX} characters.")


@strawberry.input(
    description="Generate a portrait for characterId, or for a draft (then pass the job to createCharacter)."
)
class GenerateCharacterPortraitInput:
    character_id: strawberry.ID | None = strawberry.field(
        default=None, description="One of your characters; give either this or draft."
    )
    draft: PortraitDraftInput | None = strawberry.field(
        default=None, description="A character not created yet; give either this or characterId."
    )
    model_id: strawberry.ID | None = strawberry.field(default=None, description=MODEL_ID_DESCRIPTION)
    quality: Quality = strawberry.field(default=Quality.HIGH, description="HIGH when omitted.")
    seed: int | None = strawberry.field(default=None, description=SEED_DESCRIPTION)
    use_reference: bool = strawberry.field(
        default=False,
        description="Give the model the character's reference image (and its seedLocked when seed is omitted), "
        "for a portrait that stays recognisable. Needs characterId, a character with a stored reference image and "
        "a model whose supportsReference is true; BAD_USER_INPUT otherwise. False when omitted.",
    )


@strawberry.input(description="Generate a free-form image into the workspace.")
class GenerateImageInput:
    prompt: str = strawberry.field(description=f"1-{MAX_PROMPT_LENGTH} characters, trimmed.")
    character_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="One of your characters, for a scene with them: the model is given the character's reference "
        "image (and its seedLocked when seed is omitted). BAD_USER_INPUT when the character has no stored "
        "reference image or the model's supportsReference is false; NOT_FOUND for a missing or foreign id.",
    )
    model_id: strawberry.ID | None = strawberry.field(default=None, description=MODEL_ID_DESCRIPTION)
    quality: Quality = strawberry.field(default=Quality.HIGH, description="HIGH when omitted.")
    seed: int | None = strawberry.field(default=None, description=SEED_DESCRIPTION)
