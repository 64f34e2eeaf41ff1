"""``POST /webhooks/fal`` and ``/webhooks/replicate``: verified provider callbacks that wake the job's worker.

With ``PROVIDER_WEBHOOKS=on`` the provider requests carry
``{PUBLIC_URL}/webhooks/<provider>``, and the provider calls it when a
request is done. A call is answered:

- 413 when its body passes ``PROVIDER_WEBHOOK_MAX_BODY_BYTES`` (read no further);
- 401 (a JSON error body, code UNAUTHENTICATED) unless its signature holds
  (server/webhook_fal.py, server/webhook_standard.py) and its timestamp is
  within ``PROVIDER_WEBHOOK_TOLERANCE_SECONDS``; the reason is logged, never told;
- 503 when the database cannot be asked (the provider delivers it again later);
- 204 otherwise, whatever it changed: a 2xx is what stops a provider's
  retries, and a call for a request we do not know (another app on the same
  fal account, or a job already finished, failed or canceled) is not worth
  retrying. Such a call, or the same delivery again, changes nothing.

A call only wakes: the job holding the request, if unfinished, gets a NOTIFY
(storage/jobs.py: wake_provider_request) that the worker polling it hears
(pipeline/wakeups.py), and that worker asks the provider for the status and
the result with our key, as it would have at its next poll. Nothing in the
body is trusted but the request id (Replicate's is only in the body).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.signals import PROVIDER_DONE_CHANNEL
from pipeline.wakeups import wakeup_key
from server.jwks import FetchedKeys
from server.request_errors import PAYLOAD_TOO_LARGE, SERVICE_UNAVAILABLE, RequestRefused, refusal_response
from server.webhook_delivery import Delivery, WebhookRefused
from server.webhook_fal import DEFAULT_JWKS_URL, FalWebhookVerifier, fal_keys
from server.webhook_standard import StandardWebhookVerifier
from storage import jobs
from storage.enums import Provider
from storage.errors import StorageError

logger = logging.getLogger(__name__)

FAL_PATH = "/webhooks/fal"
REPLICATE_PATH = "/webhooks/replicate"
UNAUTHENTICATED = "UNAUTHENTICATED"
# Deliveries remembered to answer a repeat at once; a repeat older than the tolerance is refused by its timestamp.
MAX_REMEMBERED = 10_000


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """PROVIDER_WEBHOOKS and what verifies the calls (README: Provider webhooks)."""

    enabled: bool = False
    # {PUBLIC_URL}: the providers call {public_url}/webhooks/<provider>.
    public_url: str = ""
    fal_jwks_url: str = DEFAULT_JWKS_URL
    # A signature no cached key verifies fetches fal's JWKS again, at most this often.
    fal_jwks_min_refresh_seconds: float = 60.0
    # Replicate's signing secret (whsec_...); None: /webhooks/replicate is not served.
    replicate_secret: str | None = field(default=None, repr=False)
    tolerance_seconds: float = 300.0
    max_body_bytes: int = 256 * 1024
    # Provider status polls are this many times further apart while webhooks are on (the fallback).
    poll_factor: float = 5.0

    def url(self, path: str) -> str | None:
        """Where a provider must call back, or None when webhooks are off."""
        return f"{self.public_url.rstrip('/')}{path}" if self.enabled else None


class RecentDeliveries:
    """Deliveries handled within the tolerance: the same one again is answered 204 at once, without a lookup."""

    def __init__(self, seconds: float, *, limit: int = MAX_REMEMBERED, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self.limit = limit
        self.clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def seen(self, key: str) -> bool:
        now = self.clock()
        while self._seen and next(iter(self._seen.values())) < now:
            self._seen.popitem(last=False)
        return key in self._seen

    def add(self, key: str) -> None:
        # Twice the tolerance: a delivery is refused by its timestamp before it is forgotten here.
        self._seen[key] = self.clock() + 2 * self.seconds
        self._seen.move_to_end(key)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)


Verify = Callable[[Mapping[str, str], bytes], Awaitable[Delivery]]


class WebhookEndpoint:
    """One provider's webhook route."""

    def __init__(self, provider: str, verify: Verify, settings: WebhookSettings) -> None:
        self.provider = provider
        self.verify = verify
        self.max_body_bytes = settings.max_body_bytes
        self.recent = RecentDeliveries(settings.tolerance_seconds)

    async def handle(self, request: Request) -> Response:
        body = await _bounded_body(request, self.max_body_bytes)
        if body is None:
            return refusal_response(
                RequestRefused(413, f"a webhook body is at most {self.max_body_bytes} bytes", code=PAYLOAD_TOO_LARGE)
            )
        try:
            delivery = await self.verify(request.headers, body)
        except WebhookRefused as refused:
            logger.warning("refused a %s webhook call: %s", self.provider, refused)
            return refusal_response(RequestRefused(401, "the webhook signature did not verify", code=UNAUTHENTICATED))
        if self.recent.seen(delivery.key):
            logger.info("%s webhook for request %s delivered again; nothing to do", self.provider, delivery.request_id)
            return Response(status_code=204)
        if delivery.request_id is not None:
            try:
                found = await jobs.wake_provider_request(
                    request.state.pool, provider=self.provider, request_id=delivery.request_id,
                    channel=PROVIDER_DONE_CHANNEL, payload=wakeup_key(self.provider, delivery.request_id),
                )
            except StorageError as error:
                logger.warning("%s webhook for request %s not handled: %s", self.provider, delivery.request_id, error)
                return refusal_response(
                    RequestRefused(503, "the database is unavailable; deliver it again", code=SERVICE_UNAVAILABLE)
                )
            if found:
                logger.info("%s webhook: request %s is done; woke job %s", self.provider, delivery.request_id,
                            ", ".join(str(job_id) for job_id, _ in found))
            else:
                logger.info("%s webhook for request %s: no unfinished job holds it", self.provider,
                            delivery.request_id)
        self.recent.add(delivery.key)
        return Response(status_code=204)


async def _bounded_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it (or its Content-Length) passes ``limit``."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return None
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return None
    except ClientDisconnect:
        return b""
    return bytes(body)


class Webhooks:
    """The webhook routes of one app, and the fal key fetcher they own (started and closed with the app)."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self.fal_keys: FetchedKeys | None = None
        self.routes: list[Route] = []
        if not settings.enabled:
            return
        self.fal_keys = fal_keys(settings.fal_jwks_url, min_refresh_seconds=settings.fal_jwks_min_refresh_seconds)
        fal = FalWebhookVerifier(self.fal_keys, tolerance_seconds=settings.tolerance_seconds)
        self.routes.append(
            Route(FAL_PATH, WebhookEndpoint(Provider.FAL.value, fal.verify, settings).handle, methods=["POST"])
        )
        if settings.replicate_secret is not None:
            replicate = StandardWebhookVerifier(settings.replicate_secret, tolerance_seconds=settings.tolerance_seconds)
            endpoint = WebhookEndpoint(Provider.REPLICATE.value, replicate.verify, settings)
            self.routes.append(Route(REPLICATE_PATH, endpoint.handle, methods=["POST"]))

    async def start(self) -> None:
        """fal's keys fetched before the first call (a failure is logged: the first call fetches again)."""
        if self.fal_keys is not None:
            await self.fal_keys.start()

    async def close(self) -> None:
        if self.fal_keys is not None:
            await self.fal_keys.close()

    async def __aenter__(self) -> Webhooks:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
