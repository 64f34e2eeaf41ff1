"""The catalogue of image models a client can pick from."""

from __future__ import annotations

import asyncpg

from storage import image_models
from storage.database import acquire
from storage.image_models import ImageModel


async def list_image_models(pool: asyncpg.Pool) -> list[ImageModel]:
    async with acquire(pool) as connection:
        return await image_models.list_active(connection)
