"""The ``image_models`` table: which generators exist and which is the default."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from storage.errors import translate_errors


@dataclass(frozen=True, slots=True)
class ImageModel:
    id: UUID
    model_key: str
    display_name: str
    provider: str
    is_default: bool
    is_active: bool


LIST_ACTIVE = """
SELECT id, model_key, display_name, provider, is_default, is_active
FROM image_models
WHERE is_active
ORDER BY is_default DESC, display_name
"""


@translate_errors
async def list_active(connection: asyncpg.Connection) -> list[ImageModel]:
    """Active models, the default first."""
    return [ImageModel(**row) for row in await connection.fetch(LIST_ACTIVE)]
