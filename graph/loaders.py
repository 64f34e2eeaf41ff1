"""Data loaders, made per request: one query per batch of ids, all filtered by the viewer."""

from __future__ import annotations

import functools
from uuid import UUID

import asyncpg
from strawberry.dataloader import DataLoader

from resolvers.characters import load_characters
from resolvers.viewer import Viewer
from storage.characters import Character


class CharacterByIdLoader(DataLoader[UUID, Character | None]):
    def __init__(self, pool: asyncpg.Pool, viewer: Viewer) -> None:
        super().__init__(load_fn=functools.partial(load_characters, pool, viewer))


class Loaders:
    def __init__(self, pool: asyncpg.Pool, viewer: Viewer) -> None:
        self.character_by_id = CharacterByIdLoader(pool, viewer)
