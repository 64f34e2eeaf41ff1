"""A fake fal.ai queue server for the tests: real HTTP on 127.0.0.1, scriptable per test.

It speaks the part of fal's queue API the provider uses (submit, status,
result, cancel) with fal's URL scheme (request URLs name the app only, not
the endpoint's sub-path), serves the result image itself, counts every call
by kind so a test can assert a request was never paid for twice, and
misbehaves on demand through ``behave(...)``.

With ``behave(run_seconds=...)`` a request is done that long after its
submit (not after a number of polls), and when the submit carried
``fal_webhook`` and the fake has a ``webhook_signer`` (tests/webhook_support.py),
the fake POSTs fal's signed completion call there as the request finishes;
``finished_at`` keeps when (time.time()) and ``webhook_answers`` what came back.

    with FakeFal() as fake:
        fake.behave(status_errors=2, seed=7)
        ...  # point FalConfig(queue_url=fake.url, key=fake.key) at it
        assert fake.calls["submit"] == 1
"""

from __future__ import annotations

import asyncio
import io
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from types import TracebackType
from typing import Any

import httpx
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.webhook_support import FalSigner, fal_body

FAKE_FAL_KEY = "fake-fal-key-6f1d0c"
APP_NAMESPACES = ("workflows", "comfy")
# Every result kind ``behave(result=...)`` knows.
RESULT_KINDS = ("ok", "malformed", "no_images", "missing_url", "bad_url", "bad_seed", "error_detail", "unknown")


@dataclass(frozen=True, slots=True)
class Scenario:
    """How the fake behaves until the next ``behave`` or ``reset``."""

    # Submits answer this code (with a detail) for the next ``submit_errors`` submits (None: all of them).
    submit_status: int = 200
    submit_errors: int | None = None
    # "ok", "no_request_id", "no_urls" (request_id only) or "foreign_urls" (URLs on another host).
    submit_answer: str = "ok"
    # The next N status polls answer 503.
    status_errors: int = 0
    # Status answers before the final one: IN_QUEUE at these positions, then IN_PROGRESS.
    queue_positions: tuple[int, ...] = (3, 2, 1)
    polls_before_done: int = 5
    # "COMPLETED", or "ERROR" for a request that failed on fal's side.
    final_status: str = "COMPLETED"
    result: str = "ok"
    seed: int = 424242
    image_size: tuple[int, int] = (64, 64)
    file_status: int = 200
    # Answer file requests with a 302 to this URL (another host, say) instead of the image.
    file_redirect: str | None = None
    # Serve the image without Content-Length, in small chunks.
    file_streamed: bool = False
    # Make calls of this kind ("submit", "status", "result", "cancel", "file") sleep before answering.
    hang: str | None = None
    hang_seconds: float = 1.0
    # A request is done this long after its submit (instead of after polls_before_done polls); then its webhook goes.
    run_seconds: float | None = None
    # Each run takes run_seconds plus or minus up to this much (uniformly), as a real provider's do: a fixed time
    # that is a multiple of the poll interval would finish each request just before a poll.
    run_jitter: float = 0.0
    # Log messages a status poll asked with ?logs=1 shows ({timestamp, level, message} entries, fal's format):
    # one more each IN_PROGRESS poll (all of them once done). Without logs=1 a status has no logs.
    logs: tuple[str, ...] = ()


@dataclass(slots=True)
class _Queued:
    app: str
    polls: int = 0
    # run_seconds scenarios: set when the request is done.
    finished: bool = False


class FakeFal:
    def __init__(self, *, key: str = FAKE_FAL_KEY) -> None:
        self.key = key
        # Signs the completion calls (tests/webhook_support.py: FalSigner); None: no call is made.
        self.webhook_signer: FalSigner | None = None
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
            raise RuntimeError("the fake fal server is not running")
        return self._url

    def reset(self) -> None:
        """Forget every request and count, back to the default scenario."""
        with self._lock:
            self.scenario = Scenario()
            self._submit_errors_left = self.scenario.submit_errors
            self._status_errors_left = 0
            self.calls: Counter[str] = Counter()
            self.paths: list[tuple[str, str]] = []
            self.submits: list[dict[str, Any]] = []
            self.cancelled: list[str] = []
            # The Host header of each file request.
            self.file_hosts: list[str] = []
            self._queue: dict[str, _Queued] = {}
            self.finished_at: dict[str, float] = {}
            # When a finished request was first asked about (time.time()): how fast its poller learned.
            self.first_asked_done_at: dict[str, float] = {}
            # (request id, HTTP status of the app's answer) per webhook call made.
            self.webhook_answers: list[tuple[str, int]] = []
            self.webhook_urls: list[str] = []

    def behave(self, **knobs: Any) -> Scenario:
        """Replace the scenario: the knobs given, defaults for the rest; error counters start over."""
        scenario = Scenario(**knobs)
        if scenario.result not in RESULT_KINDS:
            raise ValueError(f"unknown result kind {scenario.result!r}")
        with self._lock:
            self.scenario = scenario
            self._submit_errors_left = scenario.submit_errors
            self._status_errors_left = scenario.status_errors
        return scenario

    def enqueue(self, model_key: str) -> str:
        """A request as if an earlier attempt had submitted (and paid for) it; not counted as a submit."""
        request_id = str(uuid.uuid4())
        with self._lock:
            self._queue[request_id] = _Queued(app=app_of(model_key))
        return request_id

    def file_url(self, request_id: str, *, hops: int = 0) -> str:
        """Where the image of ``request_id`` is served, optionally behind ``hops`` redirects."""
        return f"{self.url}/hops/{hops}/{request_id}.png" if hops else f"{self.url}/files/{request_id}.png"

    def png(self) -> bytes:
        return png_bytes(*self.scenario.image_size)

    # -- lifecycle ------------------------------------------------------

    def start(self) -> FakeFal:
        config = uvicorn.Config(
            self._app(), host="127.0.0.1", port=0, log_level="warning", lifespan="on", timeout_graceful_shutdown=1
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="fake-fal", daemon=True)
        thread.start()
        give_up = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > give_up:
                raise RuntimeError("the fake fal server did not start")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        self._server, self._thread, self._url = server, thread, f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = self._url = None

    def __enter__(self) -> FakeFal:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the HTTP side --------------------------------------------------

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
                Route("/files/{name}", self._file, methods=["GET"]),
                Route("/hops/{count:int}/{name}", self._hop, methods=["GET"]),
                Route("/{app:path}/requests/{request_id}/status", self._status, methods=["GET"]),
                Route("/{app:path}/requests/{request_id}/cancel", self._cancel, methods=["PUT"]),
                Route("/{app:path}/requests/{request_id}", self._result, methods=["GET"]),
                Route("/{model:path}", self._submit, methods=["POST"]),
            ]
        )

    async def _enter(self, kind: str, request: Request, *, auth: bool = True) -> Scenario | Response:
        """Count the call; a Response means "answer this and stop" (a bad key)."""
        with self._lock:
            self.calls[kind] += 1
            self.paths.append((request.method, request.url.path))
            scenario = self.scenario
        if auth and request.headers.get("authorization") != f"Key {self.key}":
            return JSONResponse({"detail": "Invalid or missing fal key"}, status_code=401)
        if scenario.hang == kind:
            await asyncio.sleep(scenario.hang_seconds)
        return scenario

    async def _submit(self, request: Request) -> Response:
        scenario = await self._enter("submit", request)
        if isinstance(scenario, Response):
            return scenario
        if scenario.submit_status != 200 and self._take_submit_error():
            return JSONResponse({"detail": "submit refused by the fake"}, status_code=scenario.submit_status)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            return JSONResponse({"detail": [{"loc": ["body", "prompt"], "msg": "field required"}]}, status_code=422)
        request_id = str(uuid.uuid4())
        app = app_of(request.path_params["model"])
        webhook = request.query_params.get("fal_webhook")
        with self._lock:
            self.submits.append(body)
            self._queue[request_id] = queued = _Queued(app=app)
            if webhook is not None:
                self.webhook_urls.append(webhook)
        if scenario.run_seconds is not None:
            task = asyncio.create_task(self._run(request_id, queued, _jittered(scenario), webhook))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        base = str(request.base_url).rstrip("/")
        if scenario.submit_answer == "foreign_urls":
            base = "https://elsewhere.invalid"
        request_url = f"{base}/{app}/requests/{request_id}"
        answer: dict[str, Any] = {
            "request_id": request_id,
            "response_url": request_url,
            "status_url": f"{request_url}/status",
            "cancel_url": f"{request_url}/cancel",
            "queue_position": scenario.queue_positions[0] if scenario.queue_positions else 0,
        }
        if scenario.submit_answer == "no_request_id":
            del answer["request_id"]
        elif scenario.submit_answer == "no_urls":
            answer = {"request_id": request_id}
        return JSONResponse(answer)

    async def _status(self, request: Request) -> Response:
        scenario = await self._enter("status", request)
        if isinstance(scenario, Response):
            return scenario
        with self._lock:
            queued = self._find(request)
            if queued is None:
                return JSONResponse({"detail": "Request not found"}, status_code=404)
            if self._status_errors_left > 0:
                self._status_errors_left -= 1
                return PlainTextResponse("<html>503 Service Temporarily Unavailable</html>", status_code=503)
            answered = queued.polls
            queued.polls += 1
        body: dict[str, Any] = {"response_url": str(request.url.replace(query="")).removesuffix("/status")}
        positions = scenario.queue_positions
        if scenario.run_seconds is not None:
            answered = scenario.polls_before_done if queued.finished else 0
            positions = ()
            if queued.finished:
                with self._lock:
                    self.first_asked_done_at.setdefault(request.path_params["request_id"], time.time())
        if request.query_params.get("logs") == "1" and scenario.logs:
            shown = scenario.logs if answered >= scenario.polls_before_done else scenario.logs[
                : max(0, answered - len(positions) + 1)
            ]
            body["logs"] = [
                {"timestamp": datetime.now(UTC).isoformat(), "level": "INFO", "source": "user", "message": message}
                for message in shown
            ]
        if answered >= scenario.polls_before_done:
            body["status"] = scenario.final_status
            if scenario.final_status != "COMPLETED":
                body["error"] = "the runner crashed (fake)"
            return JSONResponse(body, status_code=200)
        if answered < len(positions):
            body.update(status="IN_QUEUE", queue_position=positions[answered])
        else:
            body["status"] = "IN_PROGRESS"
        return JSONResponse(body, status_code=202)

    async def _result(self, request: Request) -> Response:
        scenario = await self._enter("result", request)
        if isinstance(scenario, Response):
            return scenario
        with self._lock:
            queued = self._find(request)
            done = queued is not None and (
                queued.finished if scenario.run_seconds is not None else queued.polls > scenario.polls_before_done
            )
        if queued is None or scenario.result == "unknown":
            return JSONResponse({"detail": "Request not found"}, status_code=404)
        if not done:
            return JSONResponse({"detail": "Request is still in progress"}, status_code=400)
        width, height = scenario.image_size
        request_id = request.path_params["request_id"]
        image: dict[str, Any] = {
            "url": f"{str(request.base_url).rstrip('/')}/files/{request_id}.png",
            "content_type": "image/png",
            "width": width,
            "height": height,
        }
        body: dict[str, Any] = {"images": [image], "seed": scenario.seed}
        match scenario.result:
            case "malformed":
                return PlainTextResponse("<html>not json</html>")
            case "no_images":
                body["images"] = []
            case "missing_url":
                del image["url"]
            case "bad_url":
                image["url"] = "file:///etc/passwd"
            case "bad_seed":
                body["seed"] = "lucky"
            case "error_detail":
                body = {"detail": "Content policy violation (fake)"}
        return JSONResponse(body)

    async def _cancel(self, request: Request) -> Response:
        scenario = await self._enter("cancel", request)
        if isinstance(scenario, Response):
            return scenario
        with self._lock:
            if self._find(request) is None:
                return JSONResponse({"status": "NOT_FOUND"}, status_code=404)
            self.cancelled.append(request.path_params["request_id"])
        return JSONResponse({"status": "CANCELLATION_REQUESTED"})

    async def _file(self, request: Request) -> Response:
        scenario = await self._enter("file", request, auth=False)
        with self._lock:
            self.file_hosts.append(request.headers.get("host", ""))
        if isinstance(scenario, Response):
            return scenario
        if scenario.file_status != 200:
            return PlainTextResponse("no file (fake)", status_code=scenario.file_status)
        if scenario.file_redirect is not None:
            return RedirectResponse(scenario.file_redirect, status_code=302)
        data = png_bytes(*scenario.image_size)
        if scenario.file_streamed:
            return StreamingResponse(_chunks(data), media_type="image/png")
        return Response(data, media_type="image/png")

    async def _hop(self, request: Request) -> Response:
        with self._lock:
            self.calls["redirect"] += 1
            self.paths.append((request.method, request.url.path))
        count, name = request.path_params["count"], request.path_params["name"]
        target = f"/hops/{count - 1}/{name}" if count > 1 else f"/files/{name}"
        return RedirectResponse(target, status_code=302)

    async def _run(self, request_id: str, queued: _Queued, seconds: float, webhook: str | None) -> None:
        """The request runs ``seconds``, is done, and fal calls its webhook (signed) when it has one."""
        await asyncio.sleep(seconds)
        with self._lock:
            queued.finished = True
            self.finished_at[request_id] = time.time()
        signer, client = self.webhook_signer, self._webhook_client
        if webhook is None or signer is None or client is None:
            return
        body = fal_body(request_id)
        headers = {**signer.headers(request_id, body), "content-type": "application/json"}
        try:
            status = (await client.post(webhook, content=body, headers=headers)).status_code
        except httpx.HTTPError:
            status = 0
        with self._lock:
            self.webhook_answers.append((request_id, status))

    def _find(self, request: Request) -> _Queued | None:
        """The request, if the URL names it under its app (fal's scheme), not under the full model path."""
        queued = self._queue.get(request.path_params["request_id"])
        return queued if queued is not None and queued.app == request.path_params["app"] else None

    def _take_submit_error(self) -> bool:
        with self._lock:
            if self._submit_errors_left is None:
                return True
            if self._submit_errors_left > 0:
                self._submit_errors_left -= 1
                return True
            return False


def app_of(model_key: str) -> str:
    """fal's app id for a model id: owner/alias (namespace included), without the endpoint's sub-path."""
    parts = [part for part in model_key.split("/") if part]
    return "/".join(parts[: 3 if parts and parts[0] in APP_NAMESPACES else 2])


@lru_cache(maxsize=8)
def png_bytes(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (180, 90, 200)).save(out, format="PNG")
    return out.getvalue()


async def _chunks(data: bytes, size: int = 64) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _jittered(scenario: Scenario) -> float:
    """How long this run takes: run_seconds, give or take run_jitter."""
    assert scenario.run_seconds is not None
    return max(0.0, scenario.run_seconds + random.uniform(-scenario.run_jitter, scenario.run_jitter))
