"""A fake Replicate API for the tests: real HTTP on 127.0.0.1, scriptable per test.

It speaks the part of Replicate's HTTP API the provider uses, in its wire
format: ``POST /v1/predictions`` (a version id) and
``POST /v1/models/{owner}/{name}/predictions`` (an official model) answer
201 with a prediction object (id, model, version, input, logs, output,
error, status, created_at, urls); ``GET /v1/predictions/{id}`` moves it
from ``starting`` through ``processing`` (logs growing: the seed, a progress
bar) to ``succeeded`` with ``output`` a list of URLs; ``POST
/v1/predictions/{id}/cancel`` cancels it. Refusals are problem-details
objects (title, detail, status): 401 for a wrong token, 422 for input the
model refuses (with ``invalid_fields``), 429 with a Retry-After header, 5xx
on demand. It serves the output image itself (as replicate.delivery does),
counts every call by kind so a test can assert a prediction was never paid
for twice, and misbehaves on demand through ``behave(...)``.

With ``behave(run_seconds=...)`` a prediction succeeds that long after its
creation (not after a number of polls), and when it was created with a
``webhook`` and the fake has a ``webhook_signer`` (tests/webhook_support.py:
Standard Webhooks), the fake POSTs the signed prediction there as it ends;
``finished_at`` keeps when (time.time()) and ``webhook_answers`` what came back.

    with FakeReplicate() as fake:
        fake.behave(rate_limited=1, retry_after="0.1")
        ...  # point ReplicateConfig(api_url=fake.url, token=fake.token) at it
        assert fake.calls["create"] == 2 and len(fake.creations) == 1
"""

from __future__ import annotations

import asyncio
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fake_fal import png_bytes
from tests.webhook_support import StandardSigner

FAKE_REPLICATE_TOKEN = "r8_fake_replicate_token_5b2e"
# Replicate's SDXL, as migration 0010 seeds it.
SDXL_VERSION = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"
SDXL_MODEL = f"stability-ai/sdxl:{SDXL_VERSION}"
# The widest image the fake's model accepts (as SDXL's schema bounds width and height).
MAX_SIDE = 1024
OUTPUT_KINDS = ("list", "string", "empty", "bad_url")
FINAL_STATUSES = ("succeeded", "failed", "canceled")


@dataclass(frozen=True, slots=True)
class Scenario:
    """How the fake behaves until the next ``behave`` or ``reset``."""

    # The next N calls of these kinds ("create", "get", "cancel") answer 429 with Retry-After ``retry_after``
    # (None: no header).
    rate_limited: int = 0
    rate_limited_kinds: tuple[str, ...] = ("create", "get")
    retry_after: str | None = "0.05"
    # The next N creations answer ``create_error_status`` (None: all of them).
    create_errors: int | None = 0
    create_error_status: int = 500
    # The next N polls answer 503.
    get_errors: int = 0
    # Polls answered "starting", then "processing", before the final status.
    polls_starting: int = 2
    polls_before_done: int = 4
    final_status: str = "succeeded"
    error: str = "CUDA out of memory (fake)"
    output: str = "list"
    seed_logged: int = 31337
    image_size: tuple[int, int] = (64, 64)
    # Where the prediction's ``urls`` (get, cancel) point: this fake (None) or another host.
    urls_base: str | None = None
    # Make calls of this kind sleep before answering.
    hang: str | None = None
    hang_seconds: float = 1.0
    # A prediction succeeds this long after its creation (instead of after polls_before_done polls).
    run_seconds: float | None = None
    # Each run takes run_seconds plus or minus up to this much (uniformly), as a real provider's do: a fixed time
    # that is a multiple of the poll interval would finish each request just before a poll.
    run_jitter: float = 0.0


@dataclass(slots=True)
class Prediction:
    id: str
    model: str
    version: str | None
    input: dict[str, Any]
    created_at: str
    polls: int = 0
    canceled: bool = False
    # run_seconds scenarios: set when it succeeded.
    finished: bool = False


class FakeReplicate:
    def __init__(self, *, token: str = FAKE_REPLICATE_TOKEN) -> None:
        self.token = token
        # Signs the completion calls (Standard Webhooks); None: no call is made.
        self.webhook_signer: StandardSigner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # One client for every webhook call, opened and closed in the server's own loop (its lifespan): a client
        # per call costs ~20 ms of CPU (its TLS context), which 50 calls at once turn into a second of delay.
        self._webhook_client: httpx.AsyncClient | None = None
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self.reset()

    # -- what tests use -------------------------------------------------

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the fake Replicate server is not running")
        return self._url

    def reset(self) -> None:
        """Forget every prediction and count, back to the default scenario."""
        with self._lock:
            self._apply(Scenario())
            self.calls: Counter[str] = Counter()
            self.paths: list[tuple[str, str]] = []
            # The body of every prediction created (each one paid for).
            self.creations: list[dict[str, Any]] = []
            self.cancelled: list[str] = []
            # The Authorization header of every call, file downloads included.
            self.authorizations: list[tuple[str, str | None]] = []
            self._predictions: dict[str, Prediction] = {}
            self.finished_at: dict[str, float] = {}
            # (prediction id, HTTP status of the app's answer) per webhook call made.
            self.webhook_answers: list[tuple[str, int]] = []

    def behave(self, **knobs: Any) -> Scenario:
        """Replace the scenario: the knobs given, defaults for the rest; error counters start over."""
        scenario = Scenario(**knobs)
        if scenario.output not in OUTPUT_KINDS:
            raise ValueError(f"unknown output kind {scenario.output!r}")
        if scenario.final_status not in FINAL_STATUSES:
            raise ValueError(f"unknown final status {scenario.final_status!r}")
        with self._lock:
            self._apply(scenario)
        return scenario

    def enqueue(self, model_key: str = SDXL_MODEL, *, seed: int | None = None) -> str:
        """A prediction as if an earlier attempt had created (and paid for) it; not counted as a creation."""
        owner_name, _, version = model_key.partition(":")
        model_input: dict[str, Any] = {"prompt": "made earlier"}
        if seed is not None:
            model_input["seed"] = seed
        prediction = self._new(owner_name, version or None, model_input)
        return prediction.id

    def file_url(self, prediction_id: str) -> str:
        return f"{self.url}/files/{prediction_id}/out-0.png"

    def png(self) -> bytes:
        return png_bytes(*self.scenario.image_size)

    def prediction_ids(self) -> list[str]:
        with self._lock:
            return list(self._predictions)

    # -- lifecycle ------------------------------------------------------

    def start(self) -> FakeReplicate:
        config = uvicorn.Config(
            self._app(), host="127.0.0.1", port=0, log_level="warning", lifespan="on", timeout_graceful_shutdown=1
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="fake-replicate", daemon=True)
        thread.start()
        give_up = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > give_up:
                raise RuntimeError("the fake Replicate server did not start")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        self._server, self._thread, self._url = server, thread, f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = self._url = None

    def __enter__(self) -> FakeReplicate:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the HTTP side --------------------------------------------------

    def _apply(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._rate_limited_left = scenario.rate_limited
        self._create_errors_left = scenario.create_errors
        self._get_errors_left = scenario.get_errors

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=10) as client:
            self._webhook_client = client
            try:
                yield
            finally:
                self._webhook_client = None

    def _app(self) -> Starlette:
        return Starlette(
            lifespan=self._lifespan,
            routes=[
                Route("/files/{prediction_id}/{name}", self._file, methods=["GET"]),
                Route("/v1/predictions", self._create_for_version, methods=["POST"]),
                Route("/v1/models/{owner}/{name}/predictions", self._create_for_model, methods=["POST"]),
                Route("/v1/predictions/{prediction_id}", self._get, methods=["GET"]),
                Route("/v1/predictions/{prediction_id}/cancel", self._cancel, methods=["POST"]),
            ]
        )

    async def _enter(self, kind: str, request: Request) -> Scenario | Response:
        """Count the call; a Response means "answer this and stop" (a bad token, a 429)."""
        authorization = request.headers.get("authorization")
        with self._lock:
            self.calls[kind] += 1
            self.paths.append((request.method, request.url.path))
            self.authorizations.append((kind, authorization))
            scenario = self.scenario
            limited = kind in scenario.rate_limited_kinds and self._rate_limited_left > 0
            if limited:
                self._rate_limited_left -= 1
        if authorization != f"Bearer {self.token}":
            return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        if scenario.hang == kind:
            await asyncio.sleep(scenario.hang_seconds)
        if limited:
            headers = {} if scenario.retry_after is None else {"Retry-After": scenario.retry_after}
            return _problem(
                429, "Request was throttled", "Request was throttled. Expected available in 1 second.", headers=headers
            )
        return scenario

    async def _create_for_version(self, request: Request) -> Response:
        return await self._create(request, model=None)

    async def _create_for_model(self, request: Request) -> Response:
        return await self._create(request, model=f"{request.path_params['owner']}/{request.path_params['name']}")

    async def _create(self, request: Request, *, model: str | None) -> Response:
        scenario = await self._enter("create", request)
        if isinstance(scenario, Response):
            return scenario
        if self._take_create_error():
            code = scenario.create_error_status
            return _problem(code, "Internal Server Error" if code >= 500 else "Refused", "refused by the fake")
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _problem(400, "Bad request", "the body is not a JSON object")
        version = body.get("version")
        if model is None and not isinstance(version, str):
            return _problem(422, "Input validation failed", "- version: Required", invalid=[("version", "Required")])
        if model is None and version != SDXL_VERSION:
            return _problem(
                422, "Invalid version or not permitted",
                "The specified version does not exist (or perhaps you don't have permission to use it?)",
            )
        invalid = _invalid_input(body.get("input"))
        if invalid:
            detail = "".join(f"- input.{name}: {why}\n" for name, why in invalid)
            return _problem(422, "Input validation failed", detail, invalid=[(f"input.{n}", w) for n, w in invalid])
        model_input: dict[str, Any] = body["input"]
        with self._lock:
            self.creations.append(body)
        prediction = self._new(model or "stability-ai/sdxl", version, model_input)
        if scenario.run_seconds is not None:
            webhook = body.get("webhook") if body.get("webhook_events_filter") == ["completed"] else None
            task = asyncio.create_task(self._run(request, prediction, _jittered(scenario), webhook))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return JSONResponse(self._body(request, prediction, "starting"), status_code=201)

    async def _get(self, request: Request) -> Response:
        scenario = await self._enter("get", request)
        if isinstance(scenario, Response):
            return scenario
        with self._lock:
            prediction = self._predictions.get(request.path_params["prediction_id"])
            if prediction is None:
                return _problem(404, "Not found", "Not found.")
            if self._get_errors_left > 0:
                self._get_errors_left -= 1
                return PlainTextResponse("<html>503 Service Temporarily Unavailable</html>", status_code=503)
            answered = prediction.polls
            prediction.polls += 1
        if prediction.canceled:
            status = "canceled"
        elif scenario.run_seconds is not None:
            status = scenario.final_status if prediction.finished else "processing"
            answered = scenario.polls_starting
        elif answered >= scenario.polls_before_done:
            status = scenario.final_status
        elif answered >= scenario.polls_starting:
            status = "processing"
        else:
            status = "starting"
        return JSONResponse(self._body(request, prediction, status, polls=answered))

    async def _cancel(self, request: Request) -> Response:
        scenario = await self._enter("cancel", request)
        if isinstance(scenario, Response):
            return scenario
        prediction_id = request.path_params["prediction_id"]
        with self._lock:
            prediction = self._predictions.get(prediction_id)
            if prediction is None:
                return _problem(404, "Not found", "Not found.")
            prediction.canceled = True
            self.cancelled.append(prediction_id)
        return JSONResponse(self._body(request, prediction, "canceled"))

    async def _file(self, request: Request) -> Response:
        with self._lock:
            self.calls["file"] += 1
            self.paths.append((request.method, request.url.path))
            self.authorizations.append(("file", request.headers.get("authorization")))
            scenario = self.scenario
        return Response(png_bytes(*scenario.image_size), media_type="image/png")

    # -- predictions ------------------------------------------------------

    async def _run(self, request: Request, prediction: Prediction, seconds: float, webhook: str | None) -> None:
        """The prediction runs ``seconds`` and ends; Replicate then POSTs it, signed, to its webhook."""
        await asyncio.sleep(seconds)
        with self._lock:
            prediction.finished = True
            self.finished_at[prediction.id] = time.time()
        signer, client = self.webhook_signer, self._webhook_client
        if webhook is None or signer is None or client is None:
            return
        body = orjson.dumps(self._body(request, prediction, self.scenario.final_status))
        headers = {**signer.headers(f"msg_{prediction.id}", body), "content-type": "application/json"}
        try:
            status = (await client.post(webhook, content=body, headers=headers)).status_code
        except httpx.HTTPError:
            status = 0
        with self._lock:
            self.webhook_answers.append((prediction.id, status))

    def _new(self, model: str, version: str | None, model_input: dict[str, Any]) -> Prediction:
        # Replicate's ids: 26 lowercase base32 characters.
        prediction_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(26))
        prediction = Prediction(
            id=prediction_id, model=model, version=version, input=model_input,
            created_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        )
        with self._lock:
            self._predictions[prediction_id] = prediction
        return prediction

    def _body(self, request: Request, prediction: Prediction, status: str, *, polls: int = 0) -> dict[str, Any]:
        """The prediction object as Replicate's API shows it."""
        scenario = self.scenario
        base = str(request.base_url).rstrip("/")
        api = f"{scenario.urls_base or base}/v1/predictions/{prediction.id}"
        logs = ""
        if status != "starting":
            seed = prediction.input.get("seed", scenario.seed_logged)
            steps = int(prediction.input.get("num_inference_steps", 50))
            done = steps if status == "succeeded" else min(steps, (polls - scenario.polls_starting + 1) * 10)
            logs = f"Using seed: {seed}\nPrompt: {prediction.input.get('prompt')}\n"
            # As tqdm draws it: one bar per step so far, each redrawn over the last with a carriage return.
            logs += "".join(
                f"\r{step * 100 // steps:3d}%|{'█' * (step * 10 // steps):<10}| {step}/{steps} [00:01<00:01,  7.60it/s]"
                for step in range(done + 1)
            )
            logs += "\n" if status == "succeeded" else ""
        output: Any = None
        error: str | None = None
        if status == "succeeded":
            url = f"{base}/files/{prediction.id}/out-0.png"
            match scenario.output:
                case "list":
                    output = [url]
                case "string":
                    output = url
                case "empty":
                    output = []
                case "bad_url":
                    output = ["file:///etc/passwd"]
        elif status == "failed":
            error = scenario.error
        return {
            "id": prediction.id,
            "model": prediction.model,
            "version": prediction.version or "hidden",
            "input": prediction.input,
            "logs": logs,
            "output": output,
            "data_removed": False,
            "error": error,
            "status": status,
            "created_at": prediction.created_at,
            "urls": {
                "get": api,
                "cancel": f"{api}/cancel",
                "web": f"https://replicate.example/p/{prediction.id}",
            },
        }

    def _take_create_error(self) -> bool:
        with self._lock:
            if self._create_errors_left is None:
                return True
            if self._create_errors_left > 0:
                self._create_errors_left -= 1
                return True
            return False


def _invalid_input(model_input: object) -> list[tuple[str, str]]:
    """What SDXL's input schema refuses in ``model_input`` (the fields the provider sends), as (field, why)."""
    if not isinstance(model_input, dict):
        return [("", "Invalid type. Expected: object")]
    invalid: list[tuple[str, str]] = []
    if not isinstance(model_input.get("prompt"), str):
        invalid.append(("prompt", "Invalid type. Expected: string"))
    for name in ("width", "height"):
        value = model_input.get(name, 1024)
        if not isinstance(value, int):
            invalid.append((name, "Invalid type. Expected: integer"))
        elif value > MAX_SIDE:
            invalid.append((name, f"Must be less than or equal to {MAX_SIDE}"))
    steps = model_input.get("num_inference_steps", 50)
    if not isinstance(steps, int) or not 1 <= steps <= 500:
        invalid.append(("num_inference_steps", "Must be an integer from 1 to 500"))
    return invalid


def _problem(
    status: int,
    title: str,
    detail: str,
    *,
    invalid: list[tuple[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A refusal as Replicate words it: an RFC 7807 problem-details object."""
    body: dict[str, Any] = {"title": title, "detail": detail, "status": status}
    if invalid is not None:
        body["invalid_fields"] = [
            {"type": "invalid", "field": name, "description": why} for name, why in invalid
        ]
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")


def _jittered(scenario: Scenario) -> float:
    """How long this run takes: run_seconds, give or take run_jitter."""
    assert scenario.run_seconds is not None
    return max(0.0, scenario.run_seconds + random.uniform(-scenario.run_jitter, scenario.run_jitter))
