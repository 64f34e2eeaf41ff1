"""fal.ai over its queue API: submit once (that is what costs money), then poll.

Request-scoped URLs name the app, not the endpoint: the status of a request
to ``fal-ai/bytedance/seedream/v4/text-to-image`` lives at
``fal-ai/bytedance/requests/{id}/status``, as fal's own clients build it
(fal-client's ``AppId.from_endpoint_id``, fal-js's ``parseEndpointId``). The
URLs a submission answers with are preferred, but only when they point at
fal (or at the configured queue), so the key never goes anywhere else.
httpx exceptions become ``ProviderError`` in one place (pipeline/providers/calls.py, with Replicate's).
Status polls ask for the request's logs (``?logs=1``, fal's documented
flag): the last entries' messages give ``providerProgress.message`` (and a
percent, if they hold a progress bar), as Replicate's logs do.
Not fal-client: it cannot be pointed at another queue per client, and its
fixed timeouts and retry loop (a submit included) are not ours to set; the
README's design notes say what was checked, on which version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, TypeGuard
from urllib.parse import quote

import httpx

from pipeline.providers import logs as provider_logs
from pipeline.providers.calls import json_object, shortened
from pipeline.providers.deadline import Deadline
from pipeline.providers.interface import (
    ImageRequest,
    ProgressReporter,
    ProviderError,
    ProviderProgress,
    ProviderResult,
)
from pipeline.providers.polling import Polling
from pipeline.wakeups import Wakeups, Watch

logger = logging.getLogger(__name__)

COMPLETED = "COMPLETED"
FAILED_STATUSES = frozenset({"ERROR", "FAILED", "CANCELLED", "CANCELED"})
# App ids under these namespaces have three leading segments: workflows/{owner}/{alias}.
APP_NAMESPACES = frozenset({"workflows", "comfy"})
FAL_DOMAINS = ("fal.run", "fal.ai")
# 4xx answers that mean "later", not "never".
TRANSIENT_CODES = frozenset({408, 429})
# Status polls ask for the request's logs (fal's queue API: "logs=1"); only the last entries are read.
WITH_LOGS = {"logs": "1"}
LOG_ENTRIES = 20


@dataclass(frozen=True, slots=True)
class FalConfig:
    key: str = field(repr=False)
    queue_url: str = "https://queue.fal.run"
    poll_interval: float = 1.0
    # Overall budget for one generate() call: submit, polls and result fetch.
    timeout: float = 600.0
    request_timeout: float = 30.0
    # Consecutive transient failures tolerated while polling or fetching the result.
    max_poll_errors: int = 5
    # PROVIDER_WEBHOOKS=on: fal POSTs here when a request is done ({PUBLIC_URL}/webhooks/fal), and a verified call
    # wakes the poll (pipeline/wakeups.py); polls then come only every poll_interval * webhook_poll_factor.
    webhook_url: str | None = None
    webhook_poll_factor: float = 5.0

    @property
    def status_interval(self) -> float:
        """Between two status polls: slower when a webhook will say the request is done."""
        return self.poll_interval * (self.webhook_poll_factor if self.webhook_url else 1.0)


@dataclass(frozen=True, slots=True)
class _Urls:
    status: str
    result: str
    cancel: str


def app_path(model_key: str) -> str:
    """The model id's app part (owner/alias, namespace included), which request URLs use."""
    parts = [part for part in model_key.split("/") if part]
    keep = 3 if parts and parts[0] in APP_NAMESPACES else 2
    return "/".join(parts[:keep])


class FalProvider:
    """fal's queue API over one shared HTTP client; the key travels per request, never as a client default."""

    name = "fal"

    def __init__(self, config: FalConfig, *, wakeups: Wakeups | None = None) -> None:
        self._config = config
        self._polling = Polling(config.poll_interval, config.status_interval, config.max_poll_errors)
        self._wakeups = wakeups or Wakeups()
        self._base = config.queue_url.rstrip("/")
        self._base_url = httpx.URL(self._base)
        self._auth = {"Authorization": f"Key {config.key}"}
        self._client = httpx.AsyncClient(
            timeout=config.request_timeout, headers={"Accept": "application/json"}
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def generate(
        self, request: ImageRequest, *, reporter: ProgressReporter, request_id: str | None = None
    ) -> ProviderResult:
        deadline = Deadline.start(self._config.timeout)
        # With a webhook, a fresh request is first asked about once fal says it is done (or after the slow interval):
        # submit, one status, the result. A resumed one is asked at once: it may have finished long ago.
        poll_first = True
        if request_id is None:
            request_id, urls, position = await self._submit(request, deadline)
            # Persisted before anything else can fail, so a retry resumes instead of paying again.
            await reporter.submitted(request_id)
            if self._config.webhook_url is not None:
                poll_first = False
                await reporter.progress(ProviderProgress("IN_QUEUE", position))
        else:
            urls = self._urls_for(request.model_key, request_id)
        with self._wakeups.watch(self.name, request_id) as watch:
            result_url = await self._wait(request_id, urls, reporter, deadline, watch, poll_first=poll_first)
        answer = await self._get_patiently(
            result_url,
            what=f"fal result fetch for request {request_id}",
            deadline=deadline,
            not_found=f"fal does not know request {request_id} (expired or never submitted)",
        )
        return _parse_result(answer, request_id)

    async def cancel(self, *, model_key: str, request_id: str) -> None:
        url = self._urls_for(model_key, request_id).cancel
        try:
            answer = await self._call("PUT", url, what=f"fal cancel of request {request_id}")
        except Exception as exc:  # noqa: BLE001 - best effort by contract: a failed cancel must not fail the caller
            message = exc.message if isinstance(exc, ProviderError) else type(exc).__name__
            logger.warning("could not cancel fal request %s: %s", request_id, message)
            return
        logger.info("fal cancel of request %s: %s", request_id, answer.get("status"))

    async def _submit(self, request: ImageRequest, deadline: Deadline) -> tuple[str, _Urls, int | None]:
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "image_size": {"width": request.width, "height": request.height},
            "num_images": 1,
            "enable_safety_checker": True,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if request.reference is not None and request.reference.url is not None:
            # The image-to-image endpoints' input (FLUX Redux: image_url); only models marked
            # supports_reference get a reference at all.
            body["image_url"] = request.reference.url
        answer = await self._call(
            "POST",
            f"{self._base}/{quote(request.model_key.strip('/'), safe='/')}",
            what=f"fal submit to {request.model_key}",
            deadline=deadline,
            json=body,
            params=None if self._config.webhook_url is None else {"fal_webhook": self._config.webhook_url},
        )
        request_id = answer.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise ProviderError("fal's submit answer has no request_id", retryable=False)
        built = self._urls_for(request.model_key, request_id)
        urls = _Urls(
            status=self._trusted(answer.get("status_url")) or built.status,
            result=self._trusted(answer.get("response_url")) or built.result,
            cancel=self._trusted(answer.get("cancel_url")) or built.cancel,
        )
        logger.info("fal accepted request %s for %s", request_id, request.model_key)
        position = answer.get("queue_position")
        return request_id, urls, position if _is_int(position) else None

    async def _wait(
        self,
        request_id: str,
        urls: _Urls,
        reporter: ProgressReporter,
        deadline: Deadline,
        watch: Watch,
        *,
        poll_first: bool = True,
    ) -> str:
        """Poll until fal says COMPLETED, pausing between polls until the interval passes or a webhook wakes us;
        returns where to fetch the result."""
        last: ProviderProgress | None = None
        if not poll_first:
            await self._polling.pause(deadline, f"fal request {request_id}", watch)
        while True:
            answer = await self._get_patiently(
                str(httpx.URL(urls.status).copy_merge_params(WITH_LOGS)),
                what=f"fal status poll for request {request_id}",
                deadline=deadline,
                not_found=f"fal does not know request {request_id} (expired or never submitted)",
            )
            status = answer.get("status")
            if not isinstance(status, str):
                raise ProviderError(f"fal's status answer for request {request_id} has no status", retryable=False)
            error = answer.get("error")
            if status in FAILED_STATUSES or (status == COMPLETED and error):
                raise ProviderError(
                    f"fal request {request_id} failed ({status}): {shortened(error) or 'no reason given'}",
                    retryable=False,
                )
            position = answer.get("queue_position")
            shown = provider_logs.summarize(_log_text(answer.get("logs")))
            progress = ProviderProgress(
                status, position if _is_int(position) else None, percent=shown.percent, message=shown.message
            )
            if progress != last:
                await reporter.progress(progress)
                last = progress
            if status == COMPLETED:
                return self._trusted(answer.get("response_url")) or urls.result
            await self._polling.pause(deadline, f"fal request {request_id}", watch)

    async def _get_patiently(self, url: str, *, what: str, deadline: Deadline, not_found: str) -> dict[str, Any]:
        """GET, riding out up to ``max_poll_errors`` transient failures in a row."""
        return await self._polling.patiently(
            lambda: self._call("GET", url, what=what, deadline=deadline, not_found=not_found),
            what=what, deadline=deadline,
        )

    async def _call(
        self,
        method: str,
        url: str,
        *,
        what: str,
        deadline: Deadline | None = None,
        json: dict[str, Any] | None = None,
        not_found: str | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One HTTP call to fal: its JSON object, or a ProviderError that says whether to retry."""
        timeout = self._config.request_timeout
        if deadline is not None:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise deadline.exceeded(what)
            timeout = min(timeout, remaining)
        return await json_object(
            self._client, method, url, what=what, timeout=timeout, deadline=deadline, headers=self._auth,
            refusal=lambda response: self._refusal(response, what, not_found), json=json, params=params,
        )

    def _refusal(self, response: httpx.Response, what: str, not_found: str | None) -> ProviderError:
        code = response.status_code
        if code == 404 and not_found:
            message = f"{not_found} (404)"
        elif code in (401, 403):
            message = f"{what}: fal refused the API key ({code})"
        else:
            message = f"{what}: fal answered {code}"
        detail = _detail(response)
        if detail:
            message = f"{message}: {detail}".replace(self._config.key, "***")
        return ProviderError(message, retryable=code >= 500 or code in TRANSIENT_CODES)

    def _urls_for(self, model_key: str, request_id: str) -> _Urls:
        request_url = f"{self._base}/{quote(app_path(model_key), safe='/')}/requests/{quote(request_id, safe='')}"
        return _Urls(status=f"{request_url}/status", result=request_url, cancel=f"{request_url}/cancel")

    def _trusted(self, url: object) -> str | None:
        """A URL fal handed back, if sending our key there is safe: fal's own hosts or the configured queue."""
        if not isinstance(url, str):
            return None
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            return None
        same_origin = (parsed.scheme, parsed.host, parsed.port) == (
            self._base_url.scheme,
            self._base_url.host,
            self._base_url.port,
        )
        fal_host = parsed.scheme == "https" and any(
            parsed.host == domain or parsed.host.endswith(f".{domain}") for domain in FAL_DOMAINS
        )
        return url if same_origin or fal_host else None


def _parse_result(answer: dict[str, Any], request_id: str) -> ProviderResult:
    failure = answer.get("detail") or answer.get("error")
    if failure:
        raise ProviderError(f"fal request {request_id} failed: {shortened(failure)}", retryable=False)
    images = answer.get("images")
    if not isinstance(images, list) or not images:
        raise ProviderError(f"fal's result for request {request_id} has no images", retryable=False)
    first = images[0]
    url = first.get("url") if isinstance(first, dict) else None
    if not _is_http_url(url):
        raise ProviderError(
            f"fal's result for request {request_id} has no http(s) image URL: {shortened(url)}", retryable=False
        )
    seed = answer.get("seed")
    if not _is_int(seed):
        raise ProviderError(
            f"fal's result for request {request_id} has no integer seed: {shortened(seed)}", retryable=False
        )
    content_type = first.get("content_type")
    return ProviderResult(
        seed=seed,
        image_url=url,
        content_type=content_type if isinstance(content_type, str) and content_type else None,
    )


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        return False
    return url.scheme in ("http", "https") and bool(url.host)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _detail(response: httpx.Response) -> str:
    """fal's explanation of a refusal: its JSON ``detail`` when there is one, else the body's start."""
    try:
        body = response.json()
    except ValueError:
        return shortened(response.text.strip())
    if isinstance(body, dict) and body.get("detail"):
        return shortened(body["detail"])
    return shortened(body)



def _log_text(logs: object) -> str | None:
    """fal's log entries ({timestamp, level, message}) as text, one message a line: only the last LOG_ENTRIES,
    so a long list costs no more than a short one."""
    if not isinstance(logs, list):
        return None
    messages = [entry.get("message") for entry in logs[-LOG_ENTRIES:] if isinstance(entry, dict)]
    return "\n".join(message for message in messages if isinstance(message, str)) or None
