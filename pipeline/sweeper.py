"""The workspace-temp sweeper: expired workspace images go, unless a character still shows one.

Rows are deleted first (in a transaction that row-locks them, so a
``createCharacter`` attaching the same image waits or skips), objects after
commit, through the catalogued store (catalog row, then object). A crash in
between leaves at worst an uncatalogued object: never a row or a character
pointing at a missing image.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg

from storage import workspace_assets
from storage.database import transaction
from storage.objects.catalog import CatalogedObjectStore
from storage.objects.paths import Bucket

logger = logging.getLogger(__name__)

BATCH_SIZE = 100


@dataclass(frozen=True, slots=True)
class SweepReport:
    deleted_assets: int
    deleted_objects: int
    kept_in_use: int


async def sweep(
    pool: asyncpg.Pool, objects: CatalogedObjectStore, *, recheck_seconds: float, batch_size: int = BATCH_SIZE
) -> SweepReport:
    """Delete every expired, unused workspace asset and its objects; postpone the ones in use."""
    deleted_assets = deleted_objects = kept = 0
    while True:
        async with transaction(pool) as connection:
            doomed, in_use = await workspace_assets.delete_expired(
                connection, limit=batch_size, recheck_seconds=recheck_seconds
            )
        kept += len(in_use)
        paths = [path for asset in doomed for path in (asset.temp_storage_path, asset.thumbnail_path) if path]
        await asyncio.gather(*(objects.delete(Bucket.WORKSPACE_TEMP, path) for path in paths))
        deleted_assets += len(doomed)
        deleted_objects += len(paths)
        if len(doomed) + len(in_use) < batch_size:
            break
    if deleted_assets or kept:
        logger.info(
            "sweep: deleted %d workspace assets (%d objects), kept %d in use", deleted_assets, deleted_objects, kept
        )
    return SweepReport(deleted_assets=deleted_assets, deleted_objects=deleted_objects, kept_in_use=kept)
