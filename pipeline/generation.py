"""One job, start to finish: provider, workspace-temp (seed, phase 2), library auto-save (phase 3).

Every stage can run again after a crash and gives the same outcome:
- the provider's request id and result are kept on the job, so a retry
  resumes or re-downloads instead of paying again;
- the workspace path is fixed by the job (its creation time stands in for the
  seed's upload timestamp) and its row is unique per job;
- the library paths are fixed by the job and its row is unique per job.
Every database write is fenced by the lease token: a worker that lost its
job (canceled, or claimed by another after its lease ran out) writes nothing.
The transaction that completes the job closes its attempt (job_attempts) too.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from uuid import UUID

import asyncpg
import httpx

from pipeline.address_policy import PUBLIC_ONLY, AddressPolicy
from pipeline.download import DownloadError, download_image
from pipeline.images import InvalidImage, inspect_image, make_thumbnail
from pipeline.providers.interface import ImageProvider, ImageReference, ImageRequest, ProviderError, ProviderProgress
from pipeline.providers.local import MAX_SEED
from storage import characters, job_attempts, jobs, user_library, workspace_assets
from storage.database import Connection, transaction
from storage.enums import JobAttemptOutcome, JobDestination, Provider
from storage.jobs import ClaimedJob, Job
from storage.library_copy import copy_to_library, library_row
from storage.objects.catalog import CatalogedObjectStore
from storage.objects.paths import (
    Bucket,
    InvalidObjectPath,
    extension_for,
    parse_key,
    thumbnail_path,
    workspace_image_path,
)
from storage.objects.store import ObjectNotFound
from storage.workspace_assets import WorkspaceAsset

logger = logging.getLogger(__name__)

# A provider's fresh result URL answering these is retried (the provider is asked again), not failed at once.
MISSING_RESULT_CODES = frozenset({404, 410})


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    image_width: int = 1024
    image_height: int = 1024
    thumbnail_max_side: int = 256
    workspace_ttl_seconds: float = 24 * 3600
    max_image_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    download_timeout: float = 60.0
    # Result downloads reach public addresses, and these networks (DOWNLOAD_ALLOW_NETWORKS).
    download_addresses: AddressPolicy = PUBLIC_ONLY
    # How long the signed URL of a reference image handed to a remote provider lives (REFERENCE_URL_TTL_SECONDS).
    reference_url_ttl_seconds: int = 900


class JobFailed(Exception):
    """This attempt failed; ``retryable`` says whether another may succeed. The message is shown to the user."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class LeaseLost(Exception):
    """The job is no longer this worker's (canceled, or claimed by another): stop without writing."""


class JobReporter:
    """Persists what the provider reports, fenced by the lease."""

    def __init__(self, pool: asyncpg.Pool, job_id: UUID, lease_token: str) -> None:
        self._pool = pool
        self._job_id = job_id
        self._lease_token = lease_token

    async def submitted(self, request_id: str) -> None:
        if not await jobs.record_submission(
            self._pool, job_id=self._job_id, lease_token=self._lease_token, request_id=request_id
        ):
            raise LeaseLost(f"job {self._job_id} was taken from us after submitting {request_id}")

    async def progress(self, progress: ProviderProgress) -> None:
        await jobs.record_progress(
            self._pool, job_id=self._job_id, lease_token=self._lease_token,
            status=progress.status, queue_position=progress.queue_position,
            percent=progress.percent, message=progress.message,
        )


@dataclass(frozen=True, slots=True)
class _Image:
    data: bytes
    seed: int | None


class JobRunner:
    def __init__(
        self,
        pool: asyncpg.Pool,
        objects: CatalogedObjectStore,
        providers: Mapping[Provider, ImageProvider],
        http: httpx.AsyncClient,
        config: PipelineConfig,
    ) -> None:
        self.pool = pool
        self.objects = objects
        self.providers = providers
        self.http = http
        self.config = config

    async def run(self, claimed: ClaimedJob, lease_token: str) -> None:
        """Take the job as far as it goes; raises JobFailed or LeaseLost, returns when it is completed."""
        job = claimed.job
        asset = await workspace_assets.get_by_job(self.pool, job_id=job.id)
        if asset is None:
            image = await self._generate(claimed, lease_token)
            asset = await self._store_in_workspace(job, image, lease_token)
        await self._finish(job, asset, lease_token)

    # --- the provider --------------------------------------------------------

    async def _generate(self, claimed: ClaimedJob, lease_token: str) -> _Image:
        job = claimed.job
        if job.result_url is not None:
            try:
                return _Image(await self._download(job.result_url), job.seed)
            except JobFailed as error:
                if error.retryable or job.provider_request_id is None:
                    raise
                logger.info("job %s: kept result no longer downloads (%s); asking the provider again", job.id, error)
        provider = self.providers.get(claimed.provider)
        if provider is None:
            raise JobFailed(
                f"no provider {claimed.provider.value!r} is configured on this server for {job.model_key}",
                retryable=False,
            )
        # We pick the seed when the user did not: it stays within a GraphQL Int, and a
        # provider that echoes it back makes the portrait reproducible.
        seed = job.seed if job.seed is not None else secrets.randbelow(MAX_SEED + 1)
        request = ImageRequest(
            model_key=job.model_key, prompt=job.prompt, seed=seed, quality=job.quality,
            width=self.config.image_width, height=self.config.image_height,
            reference=await self._reference(job, claimed.provider),
        )
        try:
            result = await provider.generate(
                request, reporter=JobReporter(self.pool, job.id, lease_token), request_id=job.provider_request_id
            )
        except ProviderError as error:
            raise JobFailed(f"{provider.name}: {error.message}", retryable=error.retryable) from error
        chosen_seed = result.seed if result.seed is not None else seed
        # Kept before anything else can fail: a retry starts from here, and the
        # seed a provider chose makes a re-render of the local provider identical.
        if not await jobs.record_result(
            self.pool, job_id=job.id, lease_token=lease_token, result_url=result.image_url, seed=chosen_seed
        ):
            raise LeaseLost(f"job {job.id} was taken from us before its result was kept")
        if result.image_bytes is not None:
            return _Image(result.image_bytes, chosen_seed)
        assert result.image_url is not None
        return _Image(await self._download(result.image_url, fresh=True), chosen_seed)

    async def _reference(self, job: Job, provider: Provider) -> ImageReference | None:
        """The job's reference image as its provider takes it: the bytes for the local renderer, a signed URL
        (REFERENCE_URL_TTL_SECONDS) for a remote one, which fetches it itself. A reference deleted since the
        job was queued fails the job: another attempt would not find it either."""
        if job.reference_image_key is None:
            return None
        try:
            key = parse_key(job.reference_image_key)
        except InvalidObjectPath as error:
            raise JobFailed(f"the job's reference image path is invalid: {error}", retryable=False) from error
        try:
            if provider is Provider.LOCAL:
                return ImageReference(data=await self.objects.get(key.bucket, key.path))
            await self.objects.head(key.bucket, key.path)
        except ObjectNotFound as error:
            raise JobFailed(
                f"the reference image {job.reference_image_key} is no longer stored", retryable=False
            ) from error
        now = int(time.time())
        url = self.objects.sign(
            key.bucket, key.path, issued_at=now, expires_at=now + self.config.reference_url_ttl_seconds
        )
        return ImageReference(url=url)

    async def _download(self, url: str, *, fresh: bool = False) -> bytes:
        """The image at ``url``. A result the provider has just handed over that is not there (404, 410) is worth
        another attempt: a CDN may not have it yet, and the retry asks the provider again (its request is kept,
        so nothing is paid twice); a result kept from an earlier attempt that is gone is the caller's to handle."""
        try:
            return await download_image(
                self.http, url, max_bytes=self.config.max_image_bytes, timeout=self.config.download_timeout,
                addresses=self.config.download_addresses,
            )
        except DownloadError as error:
            retryable = error.retryable or (fresh and error.status in MISSING_RESULT_CODES)
            raise JobFailed(f"downloading the result failed: {error}", retryable=retryable) from error

    # --- phase 2: workspace-temp ----------------------------------------------

    async def _store_in_workspace(self, job: Job, image: _Image, lease_token: str) -> WorkspaceAsset:
        try:
            facts = inspect_image(
                image.data, max_bytes=self.config.max_image_bytes, max_pixels=self.config.max_image_pixels
            )
            thumbnail = await asyncio.to_thread(make_thumbnail, image.data, max_side=self.config.thumbnail_max_side)
        except InvalidImage as error:
            raise JobFailed(f"the provider's result is not a usable image: {error}", retryable=False) from error
        path = workspace_image_path(
            user_id=job.user_id, job_id=job.id, timestamp_ms=int(job.created_at.timestamp() * 1000),
            extension=extension_for(facts.mime_type),
        )
        thumb = thumbnail_path(path)
        await asyncio.gather(
            self.objects.put(Bucket.WORKSPACE_TEMP, path, image.data),
            self.objects.put(Bucket.WORKSPACE_TEMP, thumb, thumbnail.data),
        )
        seed = image.seed if image.seed is not None else job.seed
        async with transaction(self.pool) as connection:
            current = await jobs.lock_leased(connection, job_id=job.id, lease_token=lease_token)
            if current is None:
                raise LeaseLost(f"job {job.id} was taken from us before its workspace image was recorded")
            asset = await workspace_assets.create(
                connection,
                user_id=job.user_id,
                job_id=job.id,
                temp_storage_path=path,
                thumbnail_path=thumb,
                mime_type=facts.mime_type,
                file_size_bytes=facts.size_bytes,
                original_prompt=job.prompt,
                model_used=job.model_key,
                generation_seed=seed,
                generation_settings={
                    "width": facts.width,
                    "height": facts.height,
                    "quality": job.quality,
                    "destination": job.destination,
                    "character_id": None if current.character_id is None else str(current.character_id),
                    "thumbnail_width": thumbnail.width,
                    "thumbnail_height": thumbnail.height,
                },
                ttl_seconds=self.config.workspace_ttl_seconds,
            )
            if current.character_id is not None:
                await characters.set_portrait(
                    connection, user_id=job.user_id, character_id=current.character_id,
                    image_url=asset.image_key, seed_locked=seed,
                )
        return asset

    # --- phase 3: the library, then done ---------------------------------------

    async def _finish(self, job: Job, asset: WorkspaceAsset, lease_token: str) -> None:
        async with transaction(self.pool) as connection:
            current = await jobs.lock_leased(connection, job_id=job.id, lease_token=lease_token)
            if current is None:
                raise LeaseLost(f"job {job.id} was taken from us before it completed")
            if job.destination is not JobDestination.CHARACTER_PORTRAIT or current.character_id is None:
                # A workspace image, a draft not attached yet (createCharacter sends it back
                # to the queue when it attaches one), or a character deleted meanwhile.
                await _complete(connection, job.id, lease_token)
                return
        # Read under the row lock: once set, a job's character never changes (only to null, on delete).
        character_id = current.character_id
        image_path, thumb = await copy_to_library(self.objects, asset=asset, character_id=character_id)
        async with transaction(self.pool) as connection:
            if await jobs.lock_leased(connection, job_id=job.id, lease_token=lease_token) is None:
                raise LeaseLost(f"job {job.id} was taken from us before its library save")
            character = await characters.get(connection, user_id=job.user_id, character_id=character_id)
            if character is not None:
                row = library_row(
                    asset, image_path=image_path, thumbnail=thumb, character=character,
                    consistency_method=job.metadata.get("consistency_method"),
                )
                saved = await user_library.create(connection, asset=row)
                await characters.replace_portrait(
                    connection, user_id=job.user_id, character_id=character_id,
                    old_url=asset.image_key, new_url=saved.image_key,
                )
            await _complete(connection, job.id, lease_token)


async def _complete(connection: Connection, job_id: UUID, lease_token: str) -> None:
    """The job and its attempt end together, under the lease the caller locked (``jobs.lock_leased``)."""
    if not await jobs.complete(connection, job_id=job_id, lease_token=lease_token):
        raise LeaseLost(f"job {job_id} was taken from us as it completed")
    await job_attempts.finish(connection, job_id=job_id, lease_token=lease_token, outcome=JobAttemptOutcome.COMPLETED)
