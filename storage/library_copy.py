"""Saving a workspace image to the user's library (seed, phase 3), shared by the worker and ``saveToLibrary``.

The objects are copied first and the row inserted after, so a row always
names objects that exist. Both steps are idempotent: the library paths are
fixed by the job (a second copy rewrites the same bytes) and the row is
unique per source job, so however often the step runs, a job saves one row
and one object pair.
"""

from __future__ import annotations

import asyncio
from uuid import UUID

from storage.characters import Character
from storage.objects.catalog import CatalogedObjectStore
from storage.objects.paths import Bucket, library_image_path, thumbnail_path
from storage.user_library import NewLibraryAsset, RoleplayMetadata
from storage.workspace_assets import WorkspaceAsset

PORTRAIT_TAGS = ("character", "portrait")
PORTRAIT_TYPE = "character_portrait"
CHARACTER_CATEGORY = "character"


async def copy_to_library(
    objects: CatalogedObjectStore, *, asset: WorkspaceAsset, character_id: UUID | None
) -> tuple[str, str | None]:
    """Copy the image and its thumbnail to user-library; returns their library paths."""
    extension = asset.temp_storage_path.rpartition(".")[2] or "png"
    if asset.job_id is None:
        raise ValueError("a workspace asset without a job cannot be saved (its library path comes from the job)")
    image_path = library_image_path(
        user_id=asset.user_id, job_id=asset.job_id, character_id=character_id, extension=extension
    )
    copies = [
        objects.copy(Bucket.WORKSPACE_TEMP, asset.temp_storage_path, to_bucket=Bucket.USER_LIBRARY, to_path=image_path)
    ]
    library_thumbnail = None
    if asset.thumbnail_path is not None:
        library_thumbnail = thumbnail_path(image_path)
        copies.append(
            objects.copy(
                Bucket.WORKSPACE_TEMP, asset.thumbnail_path, to_bucket=Bucket.USER_LIBRARY, to_path=library_thumbnail
            )
        )
    await asyncio.gather(*copies)
    return image_path, library_thumbnail


def library_row(
    asset: WorkspaceAsset,
    *,
    image_path: str,
    thumbnail: str | None,
    character: Character | None,
    consistency_method: str | None,
) -> NewLibraryAsset:
    """The ``user_library`` row for a saved workspace image.

    A character's portrait carries the seed's roleplay marks (tags, roleplay_metadata, category).
    """
    if asset.job_id is None:
        raise ValueError("a workspace asset without a job cannot be saved")
    settings = asset.generation_settings
    if character is None:
        tags: tuple[str, ...] = ()
        roleplay: RoleplayMetadata = {}
        category = None
    else:
        tags = PORTRAIT_TAGS
        roleplay = {
            "type": PORTRAIT_TYPE,
            "character_id": str(character.id),
            "character_name": character.name,
            "consistency_method": consistency_method,
        }
        category = CHARACTER_CATEGORY
    return NewLibraryAsset(
        user_id=asset.user_id,
        source_job_id=asset.job_id,
        storage_path=image_path,
        thumbnail_path=thumbnail,
        file_size_bytes=asset.file_size_bytes,
        mime_type=asset.mime_type,
        original_prompt=asset.original_prompt,
        model_used=asset.model_used,
        generation_seed=asset.generation_seed,
        width=_int_or_none(settings.get("width")),
        height=_int_or_none(settings.get("height")),
        tags=tags,
        roleplay_metadata=roleplay,
        content_category=category,
    )


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
