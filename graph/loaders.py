"""Data loaders, made per request: one query per batch of ids, all filtered by the viewer."""

from __future__ import annotations

import functools
from uuid import UUID

import asyncpg
from strawberry.dataloader import DataLoader

from resolvers.characters import load_characters
from resolvers.jobs import load_job_attempts, load_jobs
from resolvers.library import load_library_assets_by_job, load_workspace_assets_by_job
from resolvers.viewer import Viewer
from storage.characters import Character
from storage.job_attempts import JobAttempt
from storage.jobs import Job
from storage.user_library import LibraryAsset
from storage.workspace_assets import WorkspaceAsset


class CharacterByIdLoader(DataLoader[UUID, Character | None]):
    def __init__(self, pool: asyncpg.Pool, viewer: Viewer) -> None:
        super().__init__(load_fn=functools.partial(load_characters, pool, viewer))


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
    def __init__(self, pool: asyncpg.Pool, viewer: Viewer) -> None:
        self.character_by_id = CharacterByIdLoader(pool, viewer)
        self.job_by_id = JobByIdLoader(pool, viewer)
        self.job_attempts_by_job_id = JobAttemptsByJobIdLoader(pool, viewer)
        self.workspace_asset_by_job_id = WorkspaceAssetByJobIdLoader(pool, viewer)
        self.library_asset_by_job_id = LibraryAssetByJobIdLoader(pool, viewer)
