"""The viewer's images: workspace (temporary) and library (permanent), listed, saved and deleted."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from uuid import UUID

import asyncpg

from resolvers.errors import BadUserInput, NotFound
from resolvers.pagination import Page, decode_cursor, make_page, page_size
from resolvers.viewer import Viewer
from storage import characters, jobs, user_library, workspace_assets
from storage.database import acquire, transaction
from storage.enums import JobDestination, LibraryTab
from storage.library_copy import copy_to_library, library_row
from storage.objects.catalog import CatalogedObjectStore
from storage.objects.paths import Bucket
from storage.user_library import LibraryAsset
from storage.workspace_assets import WorkspaceAsset

logger = logging.getLogger(__name__)

WORKSPACE_NOT_FOUND = "Workspace asset not found"
LIBRARY_NOT_FOUND = "Library asset not found"


async def list_workspace_assets(
    pool: asyncpg.Pool, viewer: Viewer, *, first: int | None, after: str | None, with_cursors: bool = True
) -> Page[WorkspaceAsset]:
    """A page of the viewer's workspace images; ``with_cursors`` False when no cursor is shown."""
    size = page_size(first)
    key = decode_cursor(after)
    async with acquire(pool) as connection:
        rows = await workspace_assets.list_page(connection, user_id=viewer.user_id, limit=size + 1, after=key)
    return make_page(rows, size=size, after=key, sort_key=lambda asset: asset.sort_key, with_cursors=with_cursors)


async def list_library_assets(
    pool: asyncpg.Pool,
    viewer: Viewer,
    *,
    first: int | None,
    after: str | None,
    tab: LibraryTab,
    with_cursors: bool = True,
) -> Page[LibraryAsset]:
    """A page of the viewer's library in ``tab``; ``with_cursors`` False when no cursor is shown."""
    size = page_size(first)
    key = decode_cursor(after)
    async with acquire(pool) as connection:
        rows = await user_library.list_page(connection, user_id=viewer.user_id, limit=size + 1, after=key, tab=tab)
    return make_page(rows, size=size, after=key, sort_key=lambda asset: asset.sort_key, with_cursors=with_cursors)


async def count_workspace_assets(pool: asyncpg.Pool, viewer: Viewer) -> int:
    """How many unexpired workspace images the viewer has: ``workspaceAssets``' totalCount."""
    async with acquire(pool) as connection:
        return await workspace_assets.count(connection, user_id=viewer.user_id)


async def count_library_assets(pool: asyncpg.Pool, viewer: Viewer, *, tab: LibraryTab) -> int:
    """How many library images ``tab`` shows: ``libraryAssets``' totalCount."""
    async with acquire(pool) as connection:
        return await user_library.count(connection, user_id=viewer.user_id, tab=tab)


async def load_workspace_assets_by_job(
    pool: asyncpg.Pool, viewer: Viewer, job_ids: Sequence[UUID]
) -> list[WorkspaceAsset | None]:
    async with acquire(pool) as connection:
        found = await workspace_assets.get_many_by_job(connection, user_id=viewer.user_id, job_ids=set(job_ids))
    by_job = {asset.job_id: asset for asset in found}
    return [by_job.get(job_id) for job_id in job_ids]


async def load_library_assets_by_job(
    pool: asyncpg.Pool, viewer: Viewer, job_ids: Sequence[UUID]
) -> list[LibraryAsset | None]:
    async with acquire(pool) as connection:
        found = await user_library.get_many_by_job(connection, user_id=viewer.user_id, job_ids=set(job_ids))
    by_job = {asset.source_job_id: asset for asset in found}
    return [by_job.get(job_id) for job_id in job_ids]


async def save_to_library(
    pool: asyncpg.Pool, objects: CatalogedObjectStore, viewer: Viewer, *, workspace_asset_id: UUID
) -> LibraryAsset:
    """Keep a workspace image for good; saving the same one again returns the first save."""
    async with acquire(pool) as connection:
        asset = await workspace_assets.get(connection, user_id=viewer.user_id, asset_id=workspace_asset_id)
        if asset is None or asset.job_id is None:
            raise NotFound(WORKSPACE_NOT_FOUND)
        existing = await user_library.get_many_by_job(connection, user_id=viewer.user_id, job_ids=[asset.job_id])
        if existing:
            return existing[0]
        job = await jobs.get(connection, user_id=viewer.user_id, job_id=asset.job_id)
        if job is not None and job.is_draft and job.character_id is None:
            # Saved now, it would be a plain image, and the portrait saved again under
            # its character's name once createCharacter attaches it: two copies of one job.
            raise BadUserInput(
                "a draft portrait is saved to the library when createCharacter(portraitJobId) attaches it",
                field="workspace_asset_id",
            )
        character = None
        if job is not None and job.character_id is not None and job.destination is JobDestination.CHARACTER_PORTRAIT:
            character = await characters.get(connection, user_id=viewer.user_id, character_id=job.character_id)
    # A character's portrait is saved under its library name, as the auto-save would.
    image_path, thumbnail = await copy_to_library(
        objects, asset=asset, character_id=None if character is None else character.id
    )
    row = library_row(
        asset, image_path=image_path, thumbnail=thumbnail, character=character,
        consistency_method=None if job is None else job.metadata.get("consistency_method"),
    )
    async with transaction(pool) as connection:
        return await user_library.create(connection, asset=row)


async def delete_library_asset(
    pool: asyncpg.Pool, objects: CatalogedObjectStore, viewer: Viewer, *, asset_id: UUID
) -> UUID:
    """Delete the row and both objects; characters showing the image fall back to null."""
    async with transaction(pool) as connection:
        asset = await user_library.delete(connection, user_id=viewer.user_id, asset_id=asset_id)
        if asset is None:
            raise NotFound(LIBRARY_NOT_FOUND)
        await characters.clear_image(connection, user_id=viewer.user_id, image_url=asset.image_key)
    # After commit: nothing points at the objects any more, so their removal cannot break a character.
    for path in (asset.storage_path, asset.thumbnail_path):
        if path is not None:
            await objects.delete(Bucket.USER_LIBRARY, path)
    return asset_id
