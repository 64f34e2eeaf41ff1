"""How fast does one worker turn queued portrait jobs into saved portraits? Prints figures; not a test.

Starts a throw-away PostgreSQL (or uses DATABASE_URL) and a local object
store in a temporary folder, queues --jobs character-portrait jobs (one
character each) for the zero-latency local provider (1024x1024 PNGs), then
runs ONE worker (pipeline.worker.Worker, as `portraits worker` does) until
every job is completed. Each job goes the whole way: render, workspace-temp
image and WEBP thumbnail, workspace_assets row, character on the workspace
path, copy to user-library, user_library row, character on the library path.

Figures:
- jobs/s through the worker, per --concurrency value;
- overhead per job from "provider result in hand" (the provider returned)
  to "character on its library path with thumbnail" (the job completed):
  p50 and p95, measured one job at a time (concurrency 1) and under load.

With --remote, instead: 50 concurrent jobs through a `portraits serve`
process and its worker against fake fal and fake Replicate servers taking
2 s a job, webhooks off and on (bench/generation_remote.py). The fakes are the tests' own, imported
from tests/, so run it from the repository root with it on the path:

    python bench/generation.py [--jobs 300] [--concurrency 1,4,8]
    PYTHONPATH=. python bench/generation.py --remote [--jobs 50] [--latency 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from list_characters import database
from pipeline.generation import JobRunner, PipelineConfig
from pipeline.providers.interface import ImageProvider, ImageRequest, ProgressReporter, ProviderResult
from pipeline.providers.local import LocalProvider
from pipeline.worker import Worker, WorkerConfig
from storage.database import create_pool
from storage.enums import Provider
from storage.jobs import ClaimedJob
from storage.migrate import migrate
from storage.objects.catalog import CatalogedObjectStore
from storage.objects.local import LocalObjectStore
from storage.objects.tokens import ObjectTokens, derive_key

MODEL = "local/portrait-v1"


class TimedProvider:
    """The real local provider, noting when each result is in hand (keyed by the job's unique prompt)."""

    def __init__(self, inner: ImageProvider) -> None:
        self.inner = inner
        self.name = inner.name
        self.result_at: dict[str, float] = {}

    async def generate(
        self, request: ImageRequest, *, reporter: ProgressReporter, request_id: str | None = None
    ) -> ProviderResult:
        result = await self.inner.generate(request, reporter=reporter, request_id=request_id)
        self.result_at[request.prompt] = time.perf_counter()
        return result

    async def cancel(self, *, model_key: str, request_id: str) -> None:
        await self.inner.cancel(model_key=model_key, request_id=request_id)

    async def close(self) -> None:
        await self.inner.close()


class TimedRunner(JobRunner):
    """The real runner, noting when each job is completed."""

    done_at: dict[str, float]

    async def run(self, claimed: ClaimedJob, lease_token: str) -> None:
        await super().run(claimed, lease_token)
        self.done_at[claimed.job.prompt] = time.perf_counter()


async def queue_jobs(pool: asyncpg.Pool, user_id: uuid.UUID, count: int, run: int) -> None:
    """One character and one queued portrait job per character, in two statements."""
    ids = await pool.fetch(
        "INSERT INTO characters (user_id, name, description) "
        "SELECT $1, 'Bench ' || n, 'A benchmark character' FROM generate_series(1, $2) AS n RETURNING id",
        user_id, count,
    )
    await pool.executemany(
        "INSERT INTO jobs (user_id, destination, character_id, model_key, prompt, seed, metadata) "
        "VALUES ($1, 'character_portrait', $2, $3, $4, $5, '{\"destination\": \"character_portrait\"}')",
        [(user_id, row["id"], MODEL, f"Portrait of bench character {run}-{n}", n) for n, row in enumerate(ids)],
    )


async def run_once(dsn: str, root: Path, *, jobs: int, concurrency: int, run: int) -> dict[str, Any]:
    pool = await create_pool(dsn, max_size=max(10, concurrency * 2))
    store = LocalObjectStore(
        root / f"objects-{run}", public_url="http://bench.invalid", tokens=ObjectTokens(derive_key("bench"))
    )
    objects = CatalogedObjectStore(store, pool)
    provider = TimedProvider(LocalProvider())
    async with httpx.AsyncClient() as http:
        runner = TimedRunner(pool, objects, {Provider.LOCAL: provider}, http, PipelineConfig())
        runner.done_at = {}
        user_id = uuid.uuid4()
        await queue_jobs(pool, user_id, jobs, run)
        worker = Worker(
            dsn=dsn, pool=pool, runner=runner,
            config=WorkerConfig(concurrency=concurrency, poll_seconds=0.5, sweep_interval_seconds=0),
        )
        started = time.perf_counter()
        await worker.start()
        while len(runner.done_at) < jobs:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        await worker.stop()
    completed = await pool.fetchval("SELECT count(*) FROM jobs WHERE user_id = $1 AND status = 'completed'", user_id)
    on_library = await pool.fetchval(
        "SELECT count(*) FROM characters WHERE user_id = $1 AND image_url LIKE 'user-library/%'", user_id
    )
    await pool.close()
    if completed != jobs or on_library != jobs:
        raise SystemExit(f"only {completed} of {jobs} jobs completed, {on_library} characters on their library path")
    overheads = sorted((runner.done_at[p] - provider.result_at[p]) * 1000 for p in runner.done_at)
    return {
        "concurrency": concurrency,
        "jobs_per_second": jobs / elapsed,
        "p50": statistics.median(overheads),
        "p95": overheads[int(len(overheads) * 0.95) - 1],
    }


async def bench(dsn: str, root: Path, args: argparse.Namespace) -> None:
    await migrate(dsn)
    print(f"{args.jobs} portrait jobs per run, one worker, local provider at 1024x1024, zero latency")
    print(f"{'concurrency':>11}  {'jobs/s':>7}  {'overhead p50':>12}  {'p95':>8}")
    for run, concurrency in enumerate(args.concurrency):
        figures = await run_once(dsn, root, jobs=args.jobs, concurrency=concurrency, run=run)
        print(
            f"{figures['concurrency']:>11}  {figures['jobs_per_second']:>7.1f}  "
            f"{figures['p50']:>9.1f} ms  {figures['p95']:>5.1f} ms"
        )
    print("overhead: provider result in hand -> character on its user-library path with thumbnail (job completed)")


async def bench_remote(dsn: str, root: Path, args: argparse.Namespace) -> None:
    """Imported only here: it needs the repository root (tests/) on the path."""
    try:
        from generation_remote import bench_remote as run_remote
    except ModuleNotFoundError as error:
        raise SystemExit(f"{error}: run it from the repository root with PYTHONPATH=. (tests/ has the fakes)") from None

    await migrate(dsn)
    await run_remote(dsn, root, jobs=args.jobs, latency=args.latency)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=None, help="300 (local), 50 (--remote)")
    parser.add_argument("--concurrency", type=lambda raw: [int(v) for v in raw.split(",")], default=[1, 4, 8])
    parser.add_argument("--remote", action="store_true", help="fake fal and Replicate, webhooks off and on")
    parser.add_argument("--latency", type=float, default=2.0, help="--remote: seconds each provider request takes")
    args = parser.parse_args()
    if args.jobs is None:
        args.jobs = 50 if args.remote else 300
    print(f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs")
    with (
        tempfile.TemporaryDirectory(prefix="portraits-bench-gen-") as workdir,
        database(Path(workdir)) as (dsn, description),
    ):
        print(f"database: {description}")
        asyncio.run(bench_remote(dsn, Path(workdir), args) if args.remote else bench(dsn, Path(workdir), args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
