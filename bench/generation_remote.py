"""bench/generation.py --remote: real workers against fake fal and fake Replicate servers that take 2 s a job.

For each provider (fal, Replicate), jobs queued at once (burst) or evenly over
the latency (stream), and PROVIDER_WEBHOOKS off and on, one round: a
`portraits serve` process with its own worker (WORKERS=1,
WORKER_CONCURRENCY=50) on a port that is its PUBLIC_URL, so /webhooks/fal and
/webhooks/replicate are the app's own routes; its real providers call the
fakes (tests/fake_fal.py, tests/fake_replicate.py, in this process) over
real HTTP. The server runs apart, as it would beside a remote provider: fakes
in its process would share its interpreter lock. Each provider request
finishes --latency seconds (give or take a quarter, uniformly) after it was
made, and then (webhooks on) the fake POSTs its signed completion call to the
app (fal: Ed25519 with a key whose JWKS a local server publishes; Replicate:
Standard Webhooks with a fresh secret).

Figures per round: jobs/s (first queued -> last completed), the time from the
fake finishing a request (its own clock) to the job's completed_at (p50,
p95), and the provider API requests per job (the result image's download is
counted apart). Provider polls are every FAL_POLL_SECONDS /
REPLICATE_POLL_SECONDS (1 s), times PROVIDER_WEBHOOK_POLL_FACTOR (5) with
webhooks on.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from list_characters import Server, free_port
from storage.database import create_pool
from tests.fake_fal import FakeFal
from tests.fake_replicate import SDXL_MODEL, FakeReplicate
from tests.jwks_support import JwksServer
from tests.webhook_support import FalSigner, replicate_signer

# The fal model migration 0001 seeds.
FAL_MODEL = "fal-ai/bytedance/seedream/v4/text-to-image"
POLL_SECONDS = 1.0
# Each provider request takes the latency give or take a quarter of it, so finishing is not in step with the polls.
JITTER = 0.25
POLL_FACTOR = 5.0
# Calls that are not provider API requests: the result image's download (and a redirect on the way to it).
DOWNLOADS = ("file", "redirect")


@dataclass(frozen=True, slots=True)
class Round:
    """One round's figures: one provider, webhooks off or on, jobs queued at once (burst) or as a stream."""

    provider: str
    webhooks: bool
    stream: bool
    jobs: int
    jobs_per_second: float
    p50_ms: float
    p95_ms: float
    requests_per_job: float
    downloads_per_job: float
    webhook_calls: Counter[int]

    @property
    def target_ms(self) -> float:
        """Under 100 ms with webhooks, under one poll interval without."""
        return 100.0 if self.webhooks else POLL_SECONDS * 1000

    @property
    def met(self) -> bool:
        requests_ok = self.requests_per_job <= 3 if self.webhooks else True
        return self.p95_ms < self.target_ms and requests_ok


async def create_characters(pool: asyncpg.Pool, user_id: uuid.UUID, count: int) -> list[uuid.UUID]:
    rows = await pool.fetch(
        "INSERT INTO characters (user_id, name, description) "
        "SELECT $1, 'Bench ' || n, 'A benchmark character' FROM generate_series(1, $2) AS n RETURNING id",
        user_id, count,
    )
    return [row["id"] for row in rows]


QUEUE_JOB = (
    "INSERT INTO jobs (user_id, destination, character_id, model_key, prompt, seed, metadata) "
    "VALUES ($1, 'character_portrait', $2, $3, $4, $5, '{\"destination\": \"character_portrait\"}')"
)


async def queue_jobs(
    pool: asyncpg.Pool, user_id: uuid.UUID, characters: list[uuid.UUID], model_key: str, *, over: float
) -> None:
    """One queued portrait job per character (the insert trigger wakes the worker): all in one statement when
    ``over`` is 0, else one by one, evenly over ``over`` seconds."""
    rows = [(user_id, cid, model_key, f"Portrait of remote bench character {n}", n) for n, cid in enumerate(characters)]
    if not over:
        await pool.executemany(QUEUE_JOB, rows)
        return
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n, row in enumerate(rows):
        await asyncio.sleep(max(0.0, start + n * over / len(rows) - loop.time()))
        await pool.execute(QUEUE_JOB, *row)


def server_environ(
    dsn: str, data_dir: Path, port: int, *, webhooks: bool, fal: FakeFal, replicate: FakeReplicate,
    jwks_url: str, replicate_secret: str, concurrency: int,
) -> dict[str, str]:
    """The environment of `portraits serve`, pointed at the fakes."""
    return {
        "DATABASE_URL": dsn,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "warning",
        "PORTRAITS_DATA_DIR": str(data_dir),
        "JWT_SECRET": "bench-secret-bench-secret-bench-secret",
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "FAL_KEY": fal.key,
        "FAL_QUEUE_URL": fal.url,
        "FAL_POLL_SECONDS": str(POLL_SECONDS),
        "REPLICATE_API_TOKEN": replicate.token,
        "REPLICATE_API_URL": replicate.url,
        "REPLICATE_POLL_SECONDS": str(POLL_SECONDS),
        # The fakes serve their results on 127.0.0.1, which downloads reach only when allowed.
        "DOWNLOAD_ALLOW_NETWORKS": "127.0.0.1",
        "WORKERS": "1",
        "WORKER_CONCURRENCY": str(concurrency),
        "DATABASE_POOL_SIZE": str(max(10, concurrency // 2)),
        "PROVIDER_WEBHOOKS": "on" if webhooks else "off",
        "PROVIDER_WEBHOOK_POLL_FACTOR": str(POLL_FACTOR),
        "FAL_WEBHOOK_JWKS_URL": jwks_url,
        "REPLICATE_WEBHOOK_SECRET": replicate_secret,
    }


async def run_round(
    dsn: str, root: Path, *, provider: str, webhooks: bool, stream: bool, jobs: int, latency: float,
    fal: FakeFal, replicate: FakeReplicate, jwks_url: str, replicate_secret: str,
) -> Round:
    fake: FakeFal | FakeReplicate = fal if provider == "fal" else replicate
    fal.reset()
    replicate.reset()
    fake.behave(run_seconds=latency, run_jitter=latency * JITTER)
    port = free_port()
    name = f"{provider}-webhooks-{'on' if webhooks else 'off'}-{'stream' if stream else 'burst'}"
    environ = server_environ(
        dsn, root / f"data-{name}", port, webhooks=webhooks, fal=fal, replicate=replicate, jwks_url=jwks_url,
        replicate_secret=replicate_secret, concurrency=jobs,
    )
    pool = await create_pool(dsn, max_size=4)
    user_id = uuid.uuid4()
    server = Server(name, [sys.executable, "-m", "server.cli", "serve"], environ, port, root / f"{name}.log")
    try:
        await asyncio.to_thread(server.wait_healthy)
        characters = await create_characters(pool, user_id, jobs)
        started = time.perf_counter()
        model_key = FAL_MODEL if provider == "fal" else SDXL_MODEL
        await queue_jobs(pool, user_id, characters, model_key, over=latency if stream else 0.0)
        deadline = started + 2 * latency + 60
        while await pool.fetchval(
            "SELECT count(*) FROM jobs WHERE user_id = $1 AND status IN ('completed', 'failed', 'canceled')",
            user_id,
        ) < jobs:
            if time.perf_counter() > deadline:
                raise SystemExit(f"{name}: jobs still running a minute after the last should have finished; "
                                 f"the server's log:\n{server.log_tail()}")
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        rows = await pool.fetch(
            "SELECT status, error, provider_request_id, completed_at FROM jobs WHERE user_id = $1", user_id
        )
    finally:
        await asyncio.to_thread(server.stop)
        await pool.close()
    failed = [row for row in rows if row["status"] != "completed"]
    if failed:
        raise SystemExit(f"{name}: {len(failed)} of {jobs} jobs did not complete, e.g. {dict(failed[0])}")
    latencies = sorted(
        (row["completed_at"].timestamp() - fake.finished_at[row["provider_request_id"]]) * 1000 for row in rows
    )
    calls = fake.calls
    return Round(
        provider=provider,
        webhooks=webhooks,
        stream=stream,
        jobs=jobs,
        jobs_per_second=jobs / elapsed,
        p50_ms=statistics.median(latencies),
        p95_ms=latencies[int(len(latencies) * 0.95) - 1],
        requests_per_job=sum(n for kind, n in calls.items() if kind not in DOWNLOADS) / jobs,
        downloads_per_job=sum(calls[kind] for kind in DOWNLOADS) / jobs,
        webhook_calls=Counter(status for _, status in fake.webhook_answers),
    )


async def bench_remote(dsn: str, root: Path, *, jobs: int, latency: float) -> list[Round]:
    """Every round (fal and Replicate, webhooks off and on, jobs queued at once and as a stream), printed as it
    ends."""
    fal_key = FalSigner.new("bench-fal-key")
    signer = replicate_signer()
    print(
        f"{jobs} portrait jobs per round through one `portraits serve` process (WORKER_CONCURRENCY={jobs}); fake "
        f"providers finish each request {latency:g} s (+-{latency * JITTER:g} s) after it is made; polls every "
        f"{POLL_SECONDS:g} s ({POLL_SECONDS * POLL_FACTOR:g} s with webhooks on)"
    )
    print(
        f"burst: all queued at once (they finish within {2 * latency * JITTER:g} s); stream: queued evenly over "
        f"{latency:g} s, so about {jobs} are in flight at once"
    )
    print(
        f"{'provider':>9}  {'queued':>6}  {'webhooks':>8}  {'jobs/s':>6}  {'finished->completed p50':>23}  {'p95':>8}  "
        f"{'target':>8}  {'requests/job':>12}  {'webhook answers':>15}  met"
    )
    rounds: list[Round] = []
    with FakeFal() as fal, FakeReplicate() as replicate:
        fal.webhook_signer = fal_key
        replicate.webhook_signer = signer
        async with JwksServer.running([fal_key.public_jwk]) as jwks:
            for provider in ("fal", "replicate"):
                for stream in (False, True):
                    for webhooks in (False, True):
                        figures = await run_round(
                            dsn, root, provider=provider, webhooks=webhooks, stream=stream, jobs=jobs,
                            latency=latency, fal=fal, replicate=replicate, jwks_url=jwks.url,
                            replicate_secret=signer.secret,
                        )
                        rounds.append(figures)
                        print_round(figures)
    print(
        "finished->completed: the fake's clock when the request was done -> the job's completed_at (image "
        "downloaded, thumbnail made, character on its user-library path); requests/job: provider API calls, the "
        "result download (dl) apart; target: p95 under 100 ms with webhooks (and at most 3 requests/job), under "
        "one poll interval without"
    )
    return rounds


def print_round(figures: Round) -> None:
    answers = ",".join(f"{n}x{status}" for status, n in sorted(figures.webhook_calls.items())) or "-"
    print(
        f"{figures.provider:>9}  {'stream' if figures.stream else 'burst':>6}  "
        f"{'on' if figures.webhooks else 'off':>8}  {figures.jobs_per_second:>6.1f}  "
        f"{figures.p50_ms:>20.0f} ms  {figures.p95_ms:>5.0f} ms  {figures.target_ms:>5.0f} ms  "
        f"{figures.requests_per_job:>5.1f} (+{figures.downloads_per_job:.0f} dl)  {answers:>15}  "
        f"{'yes' if figures.met else 'NO'}"
    )
