"""The per-request context: who is asking, the pool, and this request's data loaders."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from graph.loaders import Loaders, made_on_first_use
from graph.operation_metrics import NO_OPERATION_METRICS, OperationMetrics
from graph.plans import PlanCache
from realtime.event_hub import EventHub
from resolvers.errors import Unauthenticated
from resolvers.jobs import JobPolicy
from resolvers.subscriptions import SubscriptionLimits
from resolvers.viewer import Viewer
from storage.objects.catalog import CatalogedObjectStore
from storage.objects.signing import UrlSigner

AUTH_REQUIRED = "Authentication required: send 'Authorization: Bearer <token>'"


@dataclass
class Context:
    request: Request | WebSocket
    response: Response | WebSocket | None
    pool: asyncpg.Pool
    signer: UrlSigner
    objects: CatalogedObjectStore
    job_policy: JobPolicy
    subscription_limits: SubscriptionLimits
    events: EventHub
    viewer: Viewer | None = field(default=None)
    # graphql-transport-ws / graphql-ws: the connection_init payload (strawberry sets it).
    connection_params: dict[str, object] | None = None
    # Where operations and error codes are counted (server/metrics.py); nothing by default.
    metrics: OperationMetrics = NO_OPERATION_METRICS
    # Compiled execution plans (graph/plans/, EXECUTION_PLANS); None: graphql-core executes every operation.
    plans: PlanCache | None = None

    def require_viewer(self) -> Viewer:
        if self.viewer is None:
            raise Unauthenticated(AUTH_REQUIRED)
        return self.viewer

    @made_on_first_use
    def loaders(self) -> Loaders:
        """Made on first use, so a request batches and caches its own loads and nobody else's."""
        return Loaders(self.pool, self.require_viewer())

    def refresh_loaders(self) -> None:
        """Forget cached loads: a subscription's next item must show rows as they are now."""
        self.__dict__.pop("loaders", None)
