"""Data loaders, made per request: one query per batch of ids, all filtered by the viewer."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload
from uuid import UUID

import asyncpg
from strawberry.dataloader import DataLoader

from resolvers.characters import load_characters
from resolvers.jobs import load_job_attempts, load_jobs
from resolvers.library import load_library_assets_by_job, load_workspace_assets_by_job
from resolvers.viewer import Viewer
from storage.characters import ALL_COLUMNS, Character
from storage.job_attempts import JobAttempt
from storage.jobs import Job
from storage.user_library import LibraryAsset
from storage.workspace_assets import WorkspaceAsset

T = TypeVar("T")


class made_on_first_use(Generic[T]):
    """``functools.cached_property`` without its lock (Python 3.11 takes an RLock on every first read): the value
    is made from the instance on first read and kept in its ``__dict__``, where every later read finds it without
    calling this. Per-request objects are read from one task, so nothing races for the lock to prevent."""

    def __init__(self, make: Callable[[Any], T]) -> None:
        self.make = make
        self.name = make.__name__
        self.__doc__ = make.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> made_on_first_use[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> T | made_on_first_use[T]:
        if instance is None:  # read on the class, as cached_property answers
            return self
        value = instance.__dict__[self.name] = self.make(instance)
        return value


class CharacterByIdLoader(DataLoader[UUID, Character | None]):
    """Characters by id, each holding ``columns`` (and its id and owner): storage/characters.py ``get_many``."""

    def __init__(self, pool: asyncpg.Pool, viewer: Viewer, columns: frozenset[str] = ALL_COLUMNS) -> None:
        super().__init__(load_fn=functools.partial(load_characters, pool, viewer, columns=columns))


class JobByIdLoader(DataLoader[UUID, Job | None]):
    def __init__(self, pool: asyncpg.Pool, viewer: Viewer) -> None:
        super().__init__(load_fn=functools.partial(load_jobs, pool, viewer))


class JobAttemptsByJobIdLoader(DataLoader[UUID, list[JobAttempt]]):
    def __init__(self, pool: asyncpg.Pool, viewer: Viewer) -> None:
        super().__init__(load_fn=functools.partial(load_job_attempts, pool, viewer))


class WorkspaceAssetByJobIdLoader(DataLoader[UUID, WorkspaceAsset | None]):
    def __init__(self, pool: asyncpg.Pool, viewer: Viewer) -> None:
        super().__init__(load_fn=functools.partial(load_workspace_assets_by_job, pool, viewer))


class LibraryAssetByJobIdLoader(DataLoader[UUID, LibraryAsset | None]):
    def __init__(self, pool: asyncpg.Pool, viewer: Viewer) -> None:
        super().__init__(load_fn=functools.partial(load_library_assets_by_job, pool, viewer))


class Loaders:
    """A request's loaders, each made when first used: most requests use one, or none."""

    def __init__(self, pool: asyncpg.Pool, viewer: Viewer) -> None:
        self.pool = pool
        self.viewer = viewer

    @made_on_first_use
    def character_by_id(self) -> CharacterByIdLoader:
        """Whole characters."""
        return CharacterByIdLoader(self.pool, self.viewer)

    def character_by_id_for(self, columns: frozenset[str]) -> CharacterByIdLoader:
        """Characters holding ``columns``: one loader per column set (a request that selects a character's fields
        two ways loads it twice, in two statements; the one of whole characters for all columns)."""
        if columns == ALL_COLUMNS:
            return self.character_by_id
        loader = self.partial_characters.get(columns)
        if loader is None:
            loader = self.partial_characters[columns] = CharacterByIdLoader(self.pool, self.viewer, columns)
        return loader

    @made_on_first_use
    def partial_characters(self) -> dict[frozenset[str], CharacterByIdLoader]:
        return {}

    @made_on_first_use
    def job_by_id(self) -> JobByIdLoader:
        return JobByIdLoader(self.pool, self.viewer)

    @made_on_first_use
    def job_attempts_by_job_id(self) -> JobAttemptsByJobIdLoader:
        return JobAttemptsByJobIdLoader(self.pool, self.viewer)

    @made_on_first_use
    def workspace_asset_by_job_id(self) -> WorkspaceAssetByJobIdLoader:
        return WorkspaceAssetByJobIdLoader(self.pool, self.viewer)

    @made_on_first_use
    def library_asset_by_job_id(self) -> LibraryAssetByJobIdLoader:
        return LibraryAssetByJobIdLoader(self.pool, self.viewer)
