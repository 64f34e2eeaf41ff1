"""The ``image_models`` table: which generators exist and which is the default."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from storage.database import Connection
from storage.enums import Provider
from storage.errors import translate_errors

# image_models.sizes holds 1 to this many sizes (the table's check): ImageModel.sizes' bound for graph/result_size.py.
MAX_MODEL_SIZES = 8


@dataclass(frozen=True, slots=True)
class ImageModel:
    id: UUID
    model_key: str
    display_name: str
    provider: Provider
    is_default: bool
    is_active: bool
    # What the model can take, for job creation's checks and the client's model picker.
    supports_reference: bool = False
    requires_reference: bool = False
    supports_seed: bool = True
    # (width, height) pairs the model makes, the one to suggest first.
    sizes: tuple[tuple[int, int], ...] = ((1024, 1024),)
    # The longest side of a size of one's own; None when only ``sizes`` are made.
    max_side: int | None = None
    typical_latency_seconds: float = 10.0


def _size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' as the column's check constraint allows it."""
    width, _, height = text.partition("x")
    return int(width), int(height)


def _model(row: asyncpg.Record) -> ImageModel:
    return ImageModel(
        id=row["id"],
        model_key=row["model_key"],
        display_name=row["display_name"],
        provider=Provider(row["provider"]),
        is_default=row["is_default"],
        is_active=row["is_active"],
        supports_reference=row["supports_reference"],
        requires_reference=row["requires_reference"],
        supports_seed=row["supports_seed"],
        sizes=tuple(_size(size) for size in row["sizes"]),
        max_side=row["max_side"],
        typical_latency_seconds=row["typical_latency_seconds"],
    )


COLUMNS = """id, model_key, display_name, provider, is_default, is_active, supports_reference, requires_reference,
    supports_seed, sizes, max_side, typical_latency_seconds"""


LIST_ACTIVE = f"""
SELECT {COLUMNS}
FROM image_models
WHERE is_active
ORDER BY is_default DESC, display_name
"""


@translate_errors
async def list_active(connection: Connection) -> list[ImageModel]:
    """Active models, the default first."""
    return [_model(row) for row in await connection.fetch(LIST_ACTIVE)]


GET_ACTIVE = f"""
SELECT {COLUMNS}
FROM image_models
WHERE is_active AND (CASE WHEN $1::uuid IS NULL THEN is_default ELSE id = $1 END)
"""


@translate_errors
async def get_active(connection: Connection, *, model_id: UUID | None) -> ImageModel | None:
    """The active model with that id, or with no id the default one; None when there is no such model."""
    row = await connection.fetchrow(GET_ACTIVE, model_id)
    return None if row is None else _model(row)
