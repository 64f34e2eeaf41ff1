"""Replicate over its HTTP API: create a prediction once (that is what costs money), then poll it.

A model key is Replicate's own model reference. ``owner/name:version``
creates the prediction with ``POST /v1/predictions`` and that version id;
``owner/name`` (an official model, which runs its latest version) with
``POST /v1/models/{owner}/{name}/predictions``. Either way the request is
built by ``creation`` alone, so a webhook URL has one place to go.

Every call goes to the configured API URL with the token in
``Authorization: Bearer`` on that request only; the prediction's own
``urls`` are never followed, so the token cannot be sent to another host.
The prediction id is handed to the reporter as soon as the creation answers,
so a retry resumes that prediction instead of paying for another.
Replicate's statuses become the words ``providerProgress`` shows (fal's):
starting -> IN_QUEUE, processing -> IN_PROGRESS, succeeded -> COMPLETED;
failed, canceled and aborted end the request with its ``error``. Its
``logs`` give the progress's percent (the last tqdm bar) and message (the
last line), read from their last few KB only (pipeline/providers/logs.py).
A 429 is waited out as its Retry-After says, within the generation's
deadline (a creation refused with 429 created nothing, so it is sent again);
5xx and timeouts are retryable; other 4xx (422: bad input) are not, their
message kept. httpx exceptions become ``ProviderError`` in pipeline/providers/calls.py, as fal's do.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
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
from storage.enums import ProviderStatus, Quality

logger = logging.getLogger(__name__)

API_URL = "https://api.replicate.com"
SUCCEEDED = "succeeded"
# "aborted": ended before it started (Replicate's newest terminal status).
ENDED_WITHOUT_OUTPUT = frozenset({"failed", "canceled", "aborted"})
# Replicate's words as providerProgress shows them; a word we do not know is IN_PROGRESS.
PROGRESS_WORDS = {
    "starting": ProviderStatus.IN_QUEUE,
    "processing": ProviderStatus.IN_PROGRESS,
    SUCCEEDED: ProviderStatus.COMPLETED,
}
# Quality as denoising steps (SDXL's num_inference_steps; 50 is its own default).
INFERENCE_STEPS = {Quality.HIGH: 50, Quality.FAST: 25}
# 4xx answers that mean "later", not "never" (a 429 is waited out first, and retryable when it cannot be).
TRANSIENT_CODES = frozenset({408})
# SDXL and other Cog image models log the seed they drew when none was given.
SEED_IN_LOGS = re.compile(r"Using seed: (\d+)")
# Retry-After's delay-seconds (a fraction too: harmless, and the fake's tests stay fast).
DELAY_SECONDS = re.compile(r"^\d{1,9}(\.\d{1,6})?$")
MODEL_KEY = re.compile(r"^(?P<owner>[A-Za-z0-9][\w.-]*)/(?P<name>[A-Za-z0-9][\w.-]*)(?::(?P<version>[A-Za-z0-9]+))?$")


@dataclass(frozen=True, slots=True)
class ReplicateConfig:
    token: str = field(repr=False)
    api_url: str = API_URL
    poll_interval: float = 1.0
    # Overall budget for one generate() call: creation, polls and 429 waits.
    timeout: float = 600.0
    request_timeout: float = 30.0
    # Consecutive transient failures tolerated while polling.
    max_poll_errors: int = 5
    # Consecutive 429s waited out in one call (each as long as its Retry-After, within the deadline).
    max_rate_limited: int = 5
    # PROVIDER_WEBHOOKS=on (with REPLICATE_WEBHOOK_SECRET): predictions are created with this webhook (completed
    # events only), a verified call wakes the poll (pipeline/wakeups.py), and polls come every
    # poll_interval * webhook_poll_factor.
    webhook_url: str | None = None
    webhook_poll_factor: float = 5.0

    @property
    def status_interval(self) -> float:
        """Between two polls of a prediction: slower when a webhook will say it is done."""
        return self.poll_interval * (self.webhook_poll_factor if self.webhook_url else 1.0)


@dataclass(frozen=True, slots=True)
class Creation:
    """The paid request: the API path it is POSTed to and its JSON body."""

    path: str
    body: dict[str, Any]


def creation(request: ImageRequest) -> Creation:
    """The prediction-creation request for ``request``: SDXL's input names (prompt, width, height, seed,
    num_outputs, num_inference_steps); a model whose rows are added must accept them."""
    owner, name, version = parse_model_key(request.model_key)
    model_input: dict[str, Any] = {
        "prompt": request.prompt,
        "width": request.width,
        "height": request.height,
        "num_outputs": 1,
        "num_inference_steps": INFERENCE_STEPS[request.quality],
    }
    if request.seed is not None:
        model_input["seed"] = request.seed
    if version is not None:
        return Creation("/v1/predictions", {"version": version, "input": model_input})
    return Creation(f"/v1/models/{quote(owner, safe='')}/{quote(name, safe='')}/predictions", {"input": model_input})


def parse_model_key(model_key: str) -> tuple[str, str, str | None]:
    """owner, name and version (None for an official model) of ``owner/name[:version]``."""
    match = MODEL_KEY.match(model_key)
    if match is None:
        raise ProviderError(
            f"{model_key!r} is not a Replicate model reference (owner/name or owner/name:version)", retryable=False
        )
    return match["owner"], match["name"], match["version"]


class _RateLimited(ProviderError):
    """A 429, with how long Replicate asked us to wait (None: it did not say)."""

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message, retryable=True)
        self.retry_after = retry_after


class ReplicateProvider:
    """Replicate's predictions API over one shared HTTP client; the token travels per request."""

    name = "replicate"

    def __init__(self, config: ReplicateConfig, *, wakeups: Wakeups | None = None) -> None:
        self._config = config
        self._polling = Polling(config.poll_interval, config.status_interval, config.max_poll_errors)
        self._wakeups = wakeups or Wakeups()
        self._base = config.api_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {config.token}"}
        self._client = httpx.AsyncClient(
            timeout=config.request_timeout, headers={"Accept": "application/json"}, follow_redirects=False
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def generate(
        self, request: ImageRequest, *, reporter: ProgressReporter, request_id: str | None = None
    ) -> ProviderResult:
        deadline = Deadline.start(self._config.timeout)
        answer: dict[str, Any] | None = None
        if request_id is None:
            answer = await self._create(request, deadline)
            request_id = answer["id"]
            # Persisted before anything else can fail, so a retry resumes instead of paying again.
            await reporter.submitted(request_id)
        with self._wakeups.watch(self.name, request_id) as watch:
            finished = await self._wait(request_id, answer, reporter, deadline, watch)
        return _result(finished, request_id, request.seed)

    async def cancel(self, *, model_key: str, request_id: str) -> None:
        # Bounded by one call's timeout (429 waits included): it runs while a canceled job winds down.
        deadline = Deadline.start(self._config.request_timeout)
        try:
            answer = await self._call(
                "POST", f"{_prediction_path(request_id)}/cancel",
                what=f"replicate cancel of prediction {request_id}", deadline=deadline,
                not_found=f"replicate does not know prediction {request_id}",
            )
        except Exception as exc:  # noqa: BLE001 - best effort by contract: a failed cancel must not fail the caller
            message = exc.message if isinstance(exc, ProviderError) else type(exc).__name__
            logger.warning("could not cancel replicate prediction %s: %s", request_id, message)
            return
        logger.info("replicate cancel of prediction %s: %s", request_id, answer.get("status"))

    async def _create(self, request: ImageRequest, deadline: Deadline) -> dict[str, Any]:
        built = creation(request)
        body = built.body
        if self._config.webhook_url is not None:
            body = {**body, "webhook": self._config.webhook_url, "webhook_events_filter": ["completed"]}
        answer = await self._call(
            "POST", built.path, what=f"replicate prediction for {request.model_key}", deadline=deadline,
            json=body,
            not_found=f"replicate does not know the model {request.model_key}",
        )
        prediction_id = answer.get("id")
        if not isinstance(prediction_id, str) or not prediction_id:
            raise ProviderError("replicate's creation answer has no prediction id", retryable=False)
        logger.info("replicate created prediction %s for %s", prediction_id, request.model_key)
        return answer

    async def _wait(
        self,
        prediction_id: str,
        answer: dict[str, Any] | None,
        reporter: ProgressReporter,
        deadline: Deadline,
        watch: Watch,
    ) -> dict[str, Any]:
        """Poll (starting from the creation's answer, when there is one) until the prediction succeeds, pausing
        between polls until the interval passes or a webhook wakes us."""
        last: ProviderProgress | None = None
        logged = ""
        while True:
            if answer is None:
                answer = await self._get_patiently(prediction_id, deadline)
            status = answer.get("status")
            if not isinstance(status, str):
                raise ProviderError(f"replicate's answer for prediction {prediction_id} has no status", retryable=False)
            if status in ENDED_WITHOUT_OUTPUT:
                reason = shortened(answer.get("error")) or "no reason given"
                raise ProviderError(f"prediction {prediction_id} {status}: {reason}", retryable=False)
            shown = provider_logs.summarize(answer.get("logs"))
            progress = ProviderProgress(
                PROGRESS_WORDS.get(status, ProviderStatus.IN_PROGRESS).value,
                percent=shown.percent, message=shown.message,
            )
            if progress != last:
                await reporter.progress(progress)
                last = progress
            logged = _log_new_lines(prediction_id, answer.get("logs"), logged)
            if status == SUCCEEDED:
                return answer
            await self._polling.pause(deadline, f"replicate prediction {prediction_id}", watch)
            answer = None

    async def _get_patiently(self, prediction_id: str, deadline: Deadline) -> dict[str, Any]:
        """GET the prediction, riding out up to ``max_poll_errors`` transient failures in a row."""
        return await self._polling.patiently(
            lambda: self._call(
                "GET", _prediction_path(prediction_id), what=f"replicate poll of prediction {prediction_id}",
                deadline=deadline,
                not_found=f"replicate does not know prediction {prediction_id} (expired or never created)",
            ),
            what=f"replicate poll of prediction {prediction_id}", deadline=deadline,
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        deadline: Deadline,
        json: dict[str, Any] | None = None,
        not_found: str | None = None,
    ) -> dict[str, Any]:
        """One request, sent again after each 429 once its Retry-After has passed, within the deadline."""
        limited = 0
        while True:
            try:
                return await self._send(method, path, what=what, deadline=deadline, json=json, not_found=not_found)
            except _RateLimited as exc:
                limited += 1
                if limited > self._config.max_rate_limited:
                    raise ProviderError(f"{exc.message} ({limited} times in a row)", retryable=True) from exc
                wait = self._config.poll_interval if exc.retry_after is None else exc.retry_after
                if wait >= deadline.remaining():
                    raise ProviderError(
                        f"{exc.message}; waiting {wait:g} s would pass the {deadline.seconds:g} s deadline",
                        retryable=True,
                    ) from exc
                logger.warning("%s; waiting %g s as told", exc.message, wait)
                await asyncio.sleep(wait)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        deadline: Deadline,
        json: dict[str, Any] | None,
        not_found: str | None,
    ) -> dict[str, Any]:
        """One HTTP call to Replicate: its JSON object, or a ProviderError that says whether to retry."""
        remaining = deadline.remaining()
        if remaining <= 0:
            raise deadline.exceeded(what)
        timeout = min(self._config.request_timeout, remaining)
        return await json_object(
            self._client, method, f"{self._base}{path}", what=what, timeout=timeout, deadline=deadline,
            headers=self._auth, refusal=lambda response: self._refusal(response, what, not_found), json=json,
        )

    def _refusal(self, response: httpx.Response, what: str, not_found: str | None) -> ProviderError:
        code = response.status_code
        if code == 404 and not_found:
            message = f"{not_found} (404)"
        elif code in (401, 403):
            message = f"{what}: replicate refused the API token ({code})"
        elif code == 422:
            message = f"{what}: replicate refused the input (422)"
        else:
            message = f"{what}: replicate answered {code}"
        detail = _detail(response)
        if detail:
            message = f"{message}: {detail}"
        message = message.replace(self._config.token, "***")
        if code == 429:
            return _RateLimited(message, retry_after=_retry_after(response.headers.get("retry-after")))
        return ProviderError(message, retryable=code >= 500 or code in TRANSIENT_CODES)


def _prediction_path(prediction_id: str) -> str:
    return f"/v1/predictions/{quote(prediction_id, safe='')}"


def _result(answer: dict[str, Any], prediction_id: str, seed_sent: int | None) -> ProviderResult:
    """The first output URL (image models answer a list of them, some a single one) and the seed it used."""
    output = answer.get("output")
    first = output[0] if isinstance(output, list) and output else output
    if not _is_http_url(first):
        raise ProviderError(
            f"replicate's prediction {prediction_id} succeeded without an http(s) image URL: {shortened(output)}",
            retryable=False,
        )
    assert isinstance(first, str)
    return ProviderResult(seed=_seed_used(answer, seed_sent), image_url=first)


def _seed_used(answer: dict[str, Any], seed_sent: int | None) -> int | None:
    """The prediction's own input seed (a resumed prediction was created with an earlier attempt's), else the one
    the model logged drawing ("Using seed: N"), else the one this attempt would have sent."""
    model_input = answer.get("input")
    seed = model_input.get("seed") if isinstance(model_input, dict) else None
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed
    logs = answer.get("logs")
    found = SEED_IN_LOGS.findall(logs) if isinstance(logs, str) else []
    return int(found[-1]) if found else seed_sent


def _log_new_lines(prediction_id: str, logs: object, logged: str) -> str:
    """Replicate's logs (the model's own output: a seed, a progress bar) at debug level, each part once."""
    if not isinstance(logs, str) or logs == logged:
        return logged
    fresh = logs.removeprefix(logged) if logs.startswith(logged) else logs
    for line in fresh.replace("\r", "\n").splitlines():
        if line.strip():
            logger.debug("replicate prediction %s: %s", prediction_id, shortened(line.strip()))
    return logs


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delay-seconds or an HTTP date (RFC 9110); None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if DELAY_SECONDS.match(text):
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        return False
    return url.scheme in ("http", "https") and bool(url.host)


def _detail(response: httpx.Response) -> str:
    """Replicate's explanation of a refusal (a problem-details object: title, detail), else the body's start."""
    try:
        body = response.json()
    except ValueError:
        return shortened(response.text.strip())
    if isinstance(body, dict) and (body.get("detail") or body.get("title")):
        parts = [str(body[key]).strip() for key in ("title", "detail") if body.get(key)]
        return shortened(": ".join(parts))
    return shortened(body)

