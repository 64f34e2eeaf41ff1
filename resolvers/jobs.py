"""Generation jobs: start one (for a character, a draft, or the workspace), read, list, cancel."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

import asyncpg

from resolvers.characters import clean_character_fields
from resolvers.errors import BadUserInput, NotFound, RateLimited
from resolvers.pagination import Page, decode_cursor, make_page, page_size
from resolvers.portrait_prompt import MAX_PROMPT_LENGTH, PortraitSubject, build_character_portrait_prompt
from resolvers.validation import clean_text
from resolvers.viewer import Viewer
from storage import characters, image_models, job_attempts, jobs, user_library
from storage.characters import Character
from storage.database import Connection, acquire, transaction
from storage.enums import ContentRating, JobAttemptOutcome, JobDestination, JobStatus, Provider, Quality
from storage.image_models import ImageModel
from storage.job_attempts import JobAttempt
from storage.jobs import Job, JobMetadata, JobReference
from storage.objects.paths import Bucket, ExternalUrl, InvalidObjectPath, parse_image_reference

MAX_SEED = 2**31 - 1
# The most attempts a job may be given: the maximum server/settings.py allows JOB_MAX_ATTEMPTS.
MAX_JOB_ATTEMPTS = 20
JOB_NOT_FOUND = "Job not found"


@dataclass(frozen=True, slots=True)
class JobPolicy:
    """What job creation allows, from settings."""

    max_active_per_user: int = 10
    max_attempts: int = 3
    # Providers this deployment runs (fal only with FAL_KEY).
    providers: frozenset[Provider] = frozenset({Provider.LOCAL})


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    model_id: UUID | None = None
    quality: Quality = Quality.HIGH
    seed: int | None = None
    # Give the model the character's reference image (and its locked seed, when no seed is given).
    use_reference: bool = False


# jobs.metadata's consistency_method: how the job keeps the character recognisable.
REFERENCE_IMAGE = "reference_image"


async def generate_character_portrait(
    pool: asyncpg.Pool,
    viewer: Viewer,
    policy: JobPolicy,
    *,
    character_id: UUID | None,
    draft: Mapping[str, Any] | None,
    options: GenerationOptions,
) -> Job:
    """Queue a portrait for one of the viewer's characters, or for a draft that createCharacter attaches later."""
    if (character_id is None) == (draft is None):
        raise BadUserInput("give either characterId or draft", field="character_id")
    if options.use_reference and character_id is None:
        raise BadUserInput("useReference needs characterId: a draft has no reference image", field="use_reference")
    seed = _check_options(options)
    draft_fields = None if draft is None else clean_character_fields(draft, partial=False, owner_id=viewer.user_id)
    async with transaction(pool) as connection:
        model = await _pick_model(connection, policy, options)
        reference: JobReference | None = None
        if character_id is not None:
            character = await _character(connection, viewer, character_id)
            if options.use_reference:
                reference = await _reference_of(connection, viewer, model, character, seed=seed)
                seed = seed if reference.seed is None else reference.seed
            subject = PortraitSubject(
                name=character.name, description=character.description, appearance_tags=character.appearance_tags,
                traits=character.traits, persona=character.persona, gender=character.gender,
            )
            target_id: UUID | None = character.id
            rating = character.content_rating
        else:
            assert draft_fields is not None
            subject = PortraitSubject(
                name=draft_fields["name"], description=draft_fields["description"],
                appearance_tags=draft_fields.get("appearance_tags") or (), traits=draft_fields.get("traits"),
                persona=draft_fields.get("persona"), gender=draft_fields.get("gender"),
            )
            target_id = None
            rating = draft_fields.get("content_rating", ContentRating.SFW)
        metadata: JobMetadata = {
            "destination": JobDestination.CHARACTER_PORTRAIT,
            "character_id": None if target_id is None else str(target_id),
            "character_name": subject.name,
            "consistency_method": _consistency(reference, seed),
            "content_rating": rating,
            "draft": target_id is None,
        }
        return await _create(
            connection, viewer, policy, destination=JobDestination.CHARACTER_PORTRAIT, character_id=target_id,
            model=model, prompt=build_character_portrait_prompt(subject), quality=options.quality, seed=seed,
            metadata=metadata, reference=reference,
        )


async def generate_image(
    pool: asyncpg.Pool,
    viewer: Viewer,
    policy: JobPolicy,
    *,
    prompt: str,
    options: GenerationOptions,
    character_id: UUID | None = None,
) -> Job:
    """Queue a free-form image for the workspace (saved to the library only on request).

    With ``character_id`` it is a scene with that character: the model gets the character's reference
    image and, when no seed is given, its locked seed. The job's character_id stays null (that column
    names the character a *portrait* is for, whose image the worker replaces); the metadata names it.
    """
    text = clean_text(prompt, field="prompt", max_length=MAX_PROMPT_LENGTH, required=True)
    seed = _check_options(options)
    options = replace(options, use_reference=character_id is not None)
    async with transaction(pool) as connection:
        model = await _pick_model(connection, policy, options)
        metadata: JobMetadata = {"destination": JobDestination.WORKSPACE}
        reference: JobReference | None = None
        if character_id is not None:
            character = await _character(connection, viewer, character_id)
            reference = await _reference_of(connection, viewer, model, character, seed=seed)
            seed = seed if reference.seed is None else reference.seed
            metadata["scene_character_id"] = str(character.id)
            metadata["character_name"] = character.name
            metadata["consistency_method"] = _consistency(reference, seed)
        return await _create(
            connection, viewer, policy, destination=JobDestination.WORKSPACE, character_id=None, model=model,
            prompt=text, quality=options.quality, seed=seed, metadata=metadata, reference=reference,
        )


def _check_options(options: GenerationOptions) -> int | None:
    if options.seed is not None and not 0 <= options.seed <= MAX_SEED:
        raise BadUserInput(f"seed must be between 0 and {MAX_SEED}", field="seed")
    return options.seed


def _consistency(reference: JobReference | None, seed: int | None) -> str:
    if reference is not None:
        return REFERENCE_IMAGE
    return "seed_locked" if seed is not None else "none"


async def _character(connection: Connection, viewer: Viewer, character_id: UUID) -> Character:
    character = await characters.get(connection, user_id=viewer.user_id, character_id=character_id)
    if character is None:
        raise NotFound("Character not found", field="character_id")
    return character


async def _reference_of(
    connection: Connection, viewer: Viewer, model: ImageModel, character: Character, *, seed: int | None
) -> JobReference:
    """The character's reference image for a job on ``model``; BAD_USER_INPUT when there is none to give.

    Only an image stored here (the owner's, still present) is given to a model: an external URL in
    reference_image_url is never handed to a provider (set one from the library with setReferenceImage).
    The character's locked seed comes along when no seed was given and the model takes seeds.
    """
    if not model.supports_reference:
        raise BadUserInput(
            f"{model.display_name} ({model.model_key}) cannot take a reference image; "
            "pick a model whose supportsReference is true",
            field="model_id",
        )
    stored = character.reference_image_url
    if stored is None:
        raise BadUserInput(
            f"{character.name} has no reference image; set one with setReferenceImage", field="character_id"
        )
    try:
        target = parse_image_reference(stored)
    except InvalidObjectPath:
        target = None
    if isinstance(target, ExternalUrl):
        raise BadUserInput(
            f"{character.name}'s reference image is an external URL, which is never sent to a model; "
            "set one from your library with setReferenceImage",
            field="character_id",
        )
    if target is None or not target.is_owned_by(viewer.user_id) or target.key not in character.stored_image_keys:
        raise BadUserInput(
            f"{character.name}'s reference image is no longer stored; set another with setReferenceImage",
            field="character_id",
        )
    asset = None
    if target.bucket is Bucket.USER_LIBRARY:
        asset = await user_library.get_by_path(connection, user_id=viewer.user_id, storage_path=target.path)
    locked = character.seed_locked if seed is None and model.supports_seed else None
    return JobReference(image_key=target.key, asset_id=None if asset is None else asset.id, seed=locked)


async def _pick_model(connection: Connection, policy: JobPolicy, options: GenerationOptions) -> ImageModel:
    model_id = options.model_id
    model = await image_models.get_active(connection, model_id=model_id)
    if model is None:
        raise BadUserInput(
            "no such image model" if model_id is not None else "no default image model is set", field="model_id"
        )
    if model.provider not in policy.providers:
        raise BadUserInput(
            f"{model.display_name} is not available on this server "
            f"(its provider {model.provider.value!r} is not configured)",
            field="model_id",
        )
    if options.seed is not None and not model.supports_seed:
        raise BadUserInput(f"{model.display_name} ({model.model_key}) takes no seed; omit seed", field="seed")
    if model.requires_reference and not options.use_reference:
        raise BadUserInput(
            f"{model.display_name} ({model.model_key}) needs a reference image: generate a scene with "
            "characterId, or a portrait with useReference",
            field="model_id",
        )
    return model


async def _create(
    connection: Connection,
    viewer: Viewer,
    policy: JobPolicy,
    *,
    destination: JobDestination,
    character_id: UUID | None,
    model: ImageModel,
    prompt: str,
    quality: Quality,
    seed: int | None,
    metadata: JobMetadata,
    reference: JobReference | None = None,
) -> Job:
    active = await jobs.count_active(connection, user_id=viewer.user_id)
    if active >= policy.max_active_per_user:
        raise RateLimited(
            f"you have {active} generations queued or running (at most {policy.max_active_per_user}); "
            "wait for one to finish or cancel one",
            limit=policy.max_active_per_user,
        )
    return await jobs.create(
        connection, user_id=viewer.user_id, destination=destination, character_id=character_id,
        model_key=model.model_key, prompt=prompt, quality=quality, seed=seed, metadata=metadata,
        max_attempts=policy.max_attempts, reference=reference,
    )


async def get_job(load: Callable[[UUID], Awaitable[Job | None]], *, job_id: UUID) -> Job:
    """The viewer's job through a per-request loader; another user's gives the same NOT_FOUND as a missing one."""
    job = await load(job_id)
    if job is None:
        raise NotFound(JOB_NOT_FOUND)
    return job


async def load_jobs(pool: asyncpg.Pool, viewer: Viewer, job_ids: Sequence[UUID]) -> list[Job | None]:
    async with acquire(pool) as connection:
        found = await jobs.get_many(connection, user_id=viewer.user_id, job_ids=set(job_ids))
    by_id = {job.id: job for job in found}
    return [by_id.get(job_id) for job_id in job_ids]


async def load_job_attempts(pool: asyncpg.Pool, viewer: Viewer, job_ids: Sequence[UUID]) -> list[list[JobAttempt]]:
    """Each job's attempts, oldest first, in one query; another user's job has none."""
    async with acquire(pool) as connection:
        found = await job_attempts.list_for_jobs(connection, user_id=viewer.user_id, job_ids=set(job_ids))
    by_job: dict[UUID, list[JobAttempt]] = {}
    for attempt in found:
        by_job.setdefault(attempt.job_id, []).append(attempt)
    return [by_job.get(job_id, []) for job_id in job_ids]


async def list_jobs(
    pool: asyncpg.Pool,
    viewer: Viewer,
    *,
    first: int | None,
    after: str | None,
    status: JobStatus | None,
    with_cursors: bool = True,
) -> Page[Job]:
    """A page of the viewer's jobs; ``with_cursors`` False when no cursor is shown."""
    size = page_size(first)
    key = decode_cursor(after)
    async with acquire(pool) as connection:
        rows = await jobs.list_page(connection, user_id=viewer.user_id, limit=size + 1, after=key, status=status)
    return make_page(rows, size=size, after=key, sort_key=lambda job: job.sort_key, with_cursors=with_cursors)


async def count_jobs(pool: asyncpg.Pool, viewer: Viewer, *, status: JobStatus | None) -> int:
    """How many jobs ``list_jobs`` would page through: ``jobs``' totalCount."""
    async with acquire(pool) as connection:
        return await jobs.count(connection, user_id=viewer.user_id, status=status)


async def cancel_job(pool: asyncpg.Pool, viewer: Viewer, *, job_id: UUID) -> Job:
    """Cancel a queued or running job; canceling a canceled job is a no-op, a finished one is refused."""
    async with transaction(pool) as connection:
        canceled = await jobs.cancel(connection, user_id=viewer.user_id, job_id=job_id)
        if canceled is not None:
            # Its worker can write nothing more (its lease is gone), so its attempt is closed here.
            await job_attempts.close_running(
                connection, job_id=job_id, outcome=JobAttemptOutcome.CANCELED, error=jobs.CANCELED_ERROR
            )
            return canceled
        job = await jobs.get(connection, user_id=viewer.user_id, job_id=job_id)
    if job is None:
        raise NotFound(JOB_NOT_FOUND)
    if job.status is JobStatus.CANCELED:
        return job
    raise BadUserInput(f"the job is already {job.status}", field="id")
