"""Generation assembled: the providers, one HTTP client, the job runner, and N workers.

``serve`` starts it inside the app's lifespan (``WORKERS`` of them, 0 for
none) and ``portraits worker`` on its own. Everything it opens it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from functools import partial

import asyncpg
import httpx

from pipeline.download import download_client
from pipeline.generation import JobRunner, PipelineConfig
from pipeline.metrics import NO_JOB_METRICS, JobMetrics
from pipeline.providers.fal import FalConfig, FalProvider
from pipeline.providers.interface import ImageProvider
from pipeline.providers.local import LocalProvider
from pipeline.providers.replicate import ReplicateConfig, ReplicateProvider
from pipeline.sweeper import sweep
from pipeline.wakeups import Wakeups
from pipeline.worker import Worker, WorkerConfig
from storage.enums import Provider
from storage.objects.catalog import CatalogedObjectStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GenerationSettings:
    workers: int = 1
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    # None: fal models are refused (no FAL_KEY).
    fal: FalConfig | None = None
    local_latency_seconds: float = 0.0
    # None: Replicate models are refused (no REPLICATE_API_TOKEN).
    replicate: ReplicateConfig | None = None

    @property
    def provider_names(self) -> frozenset[Provider]:
        """Providers this deployment can run; jobs for other models are refused at creation."""
        configured = {Provider.FAL: self.fal, Provider.REPLICATE: self.replicate}
        return frozenset({Provider.LOCAL} | {name for name, config in configured.items() if config is not None})


def open_providers(settings: GenerationSettings, wakeups: Wakeups | None = None) -> dict[Provider, ImageProvider]:
    """The providers, sharing the process's ``wakeups`` (webhooks cut their polls short)."""
    providers: dict[Provider, ImageProvider] = {
        Provider.LOCAL: LocalProvider(latency_seconds=settings.local_latency_seconds)
    }
    if settings.fal is not None:
        providers[Provider.FAL] = FalProvider(settings.fal, wakeups=wakeups)
    if settings.replicate is not None:
        providers[Provider.REPLICATE] = ReplicateProvider(settings.replicate, wakeups=wakeups)
    return providers


class Generation:
    """The running workers of one process and what they share."""

    def __init__(
        self,
        workers: list[Worker],
        providers: dict[Provider, ImageProvider],
        http: httpx.AsyncClient,
        wakeups: Wakeups | None = None,
    ) -> None:
        self.workers = workers
        self.providers = providers
        self.http = http
        self.wakeups = wakeups or Wakeups()
        self._stopped: asyncio.Future[None] | None = None

    @classmethod
    async def start(
        cls,
        settings: GenerationSettings,
        *,
        dsn: str,
        pool: asyncpg.Pool,
        objects: CatalogedObjectStore,
        workers: int,
        metrics: JobMetrics = NO_JOB_METRICS,
    ) -> Generation:
        http = download_client()
        wakeups = Wakeups()
        providers = open_providers(settings, wakeups)
        runner = JobRunner(pool, objects, providers, http, settings.pipeline)
        recheck = settings.pipeline.workspace_ttl_seconds
        started: list[Worker] = []
        generation = cls(started, providers, http, wakeups)
        try:
            for _ in range(workers):
                worker = Worker(
                    dsn=dsn, pool=pool, runner=runner, config=settings.worker,
                    sweep=partial(sweep, pool, objects, recheck_seconds=recheck), metrics=metrics,
                    wakeups=wakeups,
                )
                await worker.start()
                started.append(worker)
        except BaseException:
            await generation.stop()
            raise
        return generation

    async def stop(self) -> None:
        """Stop the workers (each hands back the jobs it cannot finish in its grace), then what they share.

        Once: `serve` starts it as soon as it is told to stop, and its lifespan waits for the same stop.
        """
        if self._stopped is None:
            self._stopped = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopped)

    async def _stop(self) -> None:
        for worker in self.workers:
            try:
                await worker.stop()
            except Exception:
                logger.exception("%s did not stop cleanly", worker.name)
        for provider in self.providers.values():
            with contextlib.suppress(Exception):
                await provider.close()
        await self.http.aclose()
