"""``/livez`` and ``/readyz``: whether to restart this process, and whether to send it traffic.

- ``/livez`` does no I/O: the event loop answered, so the process is alive.
  A database outage must not make an orchestrator restart every replica.
- ``/readyz`` checks, at once and each within ``READY_TIMEOUT_SECONDS``, the
  database (on the health check's own connection, never the pool's:
  storage/health_connection.py) and the object store (a HEAD of a key that
  need not exist: any answer, "not found" included, means it is reachable).
  200 names what was checked; 503 names what failed.

``/healthz`` (server/app.py) stays as documented: the database only.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import Response

from server import json
from storage.errors import StorageError
from storage.health_connection import HealthConnection
from storage.objects.catalog import CatalogedObjectStore
from storage.objects.paths import Bucket
from storage.objects.store import ObjectNotFound

logger = logging.getLogger(__name__)

# Each check's bound: a load balancer's probe usually times out at 2-5 s.
READY_TIMEOUT_SECONDS = 2.0
# The key the object-store check asks about; it is never written.
PROBE_PATH = "readyz/probe"
OK = "ok"
UNREACHABLE = "unreachable"


async def livez(request: Request) -> Response:
    """200 whenever the process can answer at all."""
    return json.json_response({"status": "alive"})


async def readyz(request: Request) -> Response:
    """200 with each check's result when all pass; 503 naming the failed ones."""
    database, objects = await asyncio.gather(
        _database_check(request.state.health), _object_store_check(request.state.objects)
    )
    checks = {"database": database, "objects": objects}
    if all(result == OK for result in checks.values()):
        return json.json_response({"status": "ready", "checks": checks})
    return json.json_response({"status": "unavailable", "checks": checks}, status_code=503)


async def _database_check(health: HealthConnection) -> str:
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            await health.ping()
    except (StorageError, TimeoutError) as error:
        logger.warning("readiness: database unreachable: %s", error or type(error).__name__)
        return UNREACHABLE
    return OK


async def _object_store_check(objects: CatalogedObjectStore) -> str:
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            await objects.head(Bucket.WORKSPACE_TEMP, PROBE_PATH)
    except ObjectNotFound:
        return OK  # the store answered
    except (StorageError, TimeoutError) as error:
        logger.warning("readiness: object store unreachable: %s", error or type(error).__name__)
        return UNREACHABLE
    return OK
