"""The fal.ai provider and the result downloader, against a fake fal queue over real HTTP.

No database here: these tests use neither ``pool`` nor ``graphql``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from pipeline.address_policy import AddressPolicy
from pipeline.download import DownloadError, download_client, download_image
from pipeline.providers.fal import FalConfig, FalProvider, app_path
from pipeline.providers.interface import ImageProvider, ImageRequest, ProviderError, ProviderProgress
from storage.enums import Quality
from tests.fake_fal import FakeFal

MODEL = "fal-ai/bytedance/seedream/v4/text-to-image"
APP = "fal-ai/bytedance"
REQUEST = ImageRequest(model_key=MODEL, prompt="a silver-haired alchemist", seed=1234, quality=Quality.HIGH)


@dataclass
class Recorder:
    """A ProgressReporter that remembers what it was told, and how many polls had happened by then."""

    fake: FakeFal
    events: list[tuple[str, Any]] = field(default_factory=list)
    polls_when_submitted: int | None = None

    async def submitted(self, request_id: str) -> None:
        self.polls_when_submitted = self.fake.calls["status"]
        self.events.append(("submitted", request_id))

    async def progress(self, progress: ProviderProgress) -> None:
        self.events.append(("progress", progress))

    @property
    def submitted_ids(self) -> list[str]:
        return [value for kind, value in self.events if kind == "submitted"]

    @property
    def reported(self) -> list[ProviderProgress]:
        return [value for kind, value in self.events if kind == "progress"]


@pytest.fixture
def fake(fake_fal_server: FakeFal) -> FakeFal:
    fake_fal_server.reset()
    return fake_fal_server


@pytest.fixture
async def make_provider(fake: FakeFal) -> AsyncIterator[Callable[..., FalProvider]]:
    """FalProvider on the fake with tiny intervals; keyword arguments override the config."""
    providers: list[FalProvider] = []

    def make(**overrides: Any) -> FalProvider:
        settings: dict[str, Any] = {
            "key": fake.key,
            "queue_url": fake.url,
            "poll_interval": 0.01,
            "timeout": 5.0,
            "request_timeout": 2.0,
            "max_poll_errors": 3,
        }
        provider = FalProvider(FalConfig(**{**settings, **overrides}))
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        await provider.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with download_client() as client:
        yield client


# The fake serves on 127.0.0.1, which downloads reach only when allowed (tests/test_download_addresses.py).
LOCAL = AddressPolicy.allowing(["127.0.0.1"])


def dead_url() -> str:
    """A local URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- fal: the happy path ---------------------------------------------------


async def test_generate_submits_once_then_reports_each_change_in_order(
    fake: FakeFal, make_provider: Callable[..., FalProvider]
) -> None:
    # given a queue that shows positions 3, 2, 1, then two IN_PROGRESS polls, then COMPLETED
    fake.behave(queue_positions=(3, 2, 1), polls_before_done=5, seed=777)
    provider: ImageProvider = make_provider()
    reporter = Recorder(fake)

    # when the image is generated
    result = await provider.generate(REQUEST, reporter=reporter)

    # then the request id was reported once, first, before any poll
    assert len(reporter.submitted_ids) == 1
    request_id = reporter.submitted_ids[0]
    assert reporter.events[0] == ("submitted", request_id)
    assert reporter.polls_when_submitted == 0
    # and every change was reported once, in order (the repeated IN_PROGRESS only once)
    assert reporter.reported == [
        ProviderProgress("IN_QUEUE", 3),
        ProviderProgress("IN_QUEUE", 2),
        ProviderProgress("IN_QUEUE", 1),
        ProviderProgress("IN_PROGRESS", None),
        ProviderProgress("COMPLETED", None),
    ]
    # and the result is fal's image and seed
    assert result.image_url == fake.file_url(request_id)
    assert result.seed == 777
    assert result.content_type == "image/png"
    assert result.image_bytes is None
    # and fal got exactly one paid submit, with Seedream's input
    assert fake.calls["submit"] == 1
    assert fake.submits == [
        {
            "prompt": REQUEST.prompt,
            "image_size": {"width": 1024, "height": 1024},
            "num_images": 1,
            "seed": 1234,
            "enable_safety_checker": True,
        }
    ]


async def test_request_urls_name_the_app_not_the_endpoint_path(
    fake: FakeFal, make_provider: Callable[..., FalProvider]
) -> None:
    # given a model id with a sub-path
    provider = make_provider()
    reporter = Recorder(fake)

    # when it is generated
    await provider.generate(REQUEST, reporter=reporter)

    # then the submit went to the full model path, and status/result to the app's requests
    request_id = reporter.submitted_ids[0]
    assert ("POST", f"/{MODEL}") in fake.paths
    polled = {path for method, path in fake.paths if method == "GET" and path.endswith("/status")}
    assert polled == {f"/{APP}/requests/{request_id}/status"}
    assert ("GET", f"/{APP}/requests/{request_id}") in fake.paths


def test_app_path_keeps_owner_and_alias_and_namespace() -> None:
    # given model ids with and without sub-paths and namespaces, then only the app part is kept
    assert app_path(MODEL) == "fal-ai/bytedance"
    assert app_path("fal-ai/fast-sdxl") == "fal-ai/fast-sdxl"
    assert app_path("workflows/someone/my-flow/run") == "workflows/someone/my-flow"


async def test_seed_without_request_seed_and_beyond_int32_is_returned_as_is(
    fake: FakeFal, make_provider: Callable[..., FalProvider]
) -> None:
    # given fal picks a seed larger than a PostgreSQL integer, and the request left the seed open
    fake.behave(seed=2**40 + 5)
    request = ImageRequest(model_key=MODEL, prompt="p", seed=None, quality=Quality.FAST, width=960, height=1280)

    # when generated
    result = await make_provider().generate(request, reporter=Recorder(fake))

    # then the seed is handed back unchanged, and no seed was sent
    assert result.seed == 2**40 + 5
    assert "seed" not in fake.submits[0]
    assert fake.submits[0]["image_size"] == {"width": 960, "height": 1280}


async def test_urls_are_built_when_the_submit_answer_has_none(
    fake: FakeFal, make_provider: Callable[..., FalProvider]
) -> None:
    # given a submit answer with only a request id
    fake.behave(submit_answer="no_urls")

    # when generated, then it still completes through URLs built from the app id
    result = await make_provider().generate(REQUEST, reporter=Recorder(fake))
    assert result.seed == fake.scenario.seed
    assert fake.calls["result"] == 1


async def test_urls_on_another_host_are_not_followed_with_the_key(
    fake: FakeFal, make_provider: Callable[..., FalProvider]
) -> None:
    # given a submit answer whose URLs point at some other host
    fake.behave(submit_answer="foreign_urls")

    # when generated
    result = await make_provider().generate(REQUEST, reporter=Recorder(fake))

    # then the provider ignored them (following them could not have succeeded) and polled the queue itself
    assert result.image_url is not None
    assert fake.calls["status"] == 6


# -- fal: keys, resumes, refusals --------------------------------------------


async def test_a_wrong_key_is_refused_and_not_retryable(
    fake: FakeFal, make_provider: Callable[..., FalProvider], caplog: pytest.LogCaptureFixture
) -> None:
    # given a provider with a key fal does not accept
    caplog.set_level(logging.DEBUG)
    provider = make_provider(key="sk-wrong-secret")
    reporter = Recorder(fake)

    # when it tries to generate
    with pytest.raises(ProviderError) as caught:
        await provider.generate(REQUEST, reporter=reporter)

    # then it fails for good, says why, and never shows the key
    assert caught.value.retryable is False
    assert "401" in caught.value.message
    assert "sk-wrong-secret" not in caught.value.message
    assert "sk-wrong-secret" not in caplog.text
    assert reporter.events == []
    assert fake.submits == []


async def test_resume_polls_the_earlier_request_without_submitting(
    fake: FakeFal, make_provider: Callable[..., FalProvider]
) -> None:
    # given a request an earlier attempt submitted (and paid for)
    request_id = fake.enqueue(MODEL)
    reporter = Recorder(fake)

    # when the provider resumes it
    result = await make_provider().generate(REQUEST, reporter=reporter, request_id=request_id)

    # then nothing was submitted again and the earlier request's image came back
    assert fake.calls["submit"] == 0
    assert reporter.submitted_ids == []
    assert result.image_url == fake.file_url(request_id)
    assert reporter.reported[-1] == ProviderProgress("COMPLETED", None)


async def test_resuming_a_request_fal_does_not_know_is_not_retryable(
    fake: FakeFal, make_provider: Callable[..., FalProvider]
) -> None:
    # given a request id fal never heard of
    # when it is resumed
    with pytest.raises(ProviderError) as caught:
        await make_provider().generate(REQUEST, reporter=Recorder(fake), request_id="no-such-request")

    # then it fails for good without paying for a new one
    assert caught.value.retryable is False
    assert "does not know request no-such-request" in caught.value.message
    assert fake.calls["submit"] == 0


async def test_a_result_fal_no_longer_knows_after_resume_is_not_retryable(
    fake: FakeFal, make_provider: Callable[..., FalProvider]
) -> None:
    # given a resumed request whose status completes but whose result fal has forgotten
    request_id = fake.enqueue(MODEL)
    fake.behave(result="unknown")

    # when it is resumed
    with pytest.raises(ProviderError) as caught:
        await make_provider().generate(REQUEST, reporter=Recorder(fake), request_id=request_id)

    # then the failure is final and says the request is unknown
    assert caught.value.retryable is False
    assert f"does not know request {request_id}" in caught.value.message
    assert fake.calls["result"] == 1


@pytest.mark.parametrize(
    ("code", "retryable"), [(500, True), (503, True), (429, True), (400, False), (403, False), (422, False)]
)
async def test_submit_refusals(
    fake: FakeFal, make_provider: Callable[..., FalProvider], code: int, retryable: bool
) -> None:
    # given fal answers submits with this code
    fake.behave(submit_status=code)
    reporter = Recorder(fake)

    # when generating
    with pytest.raises(ProviderError) as caught:
        await make_provider().generate(REQUEST, reporter=reporter)

    # then 5xx and 429 may be retried, other 4xx may not; nothing was reported as submitted
    assert caught.value.retryable is retryable
    assert str(code) in caught.value.message
    assert reporter.submitted_ids == []
    assert fake.calls["submit"] == 1


async def test_a_submit_answer_without_request_id_is_not_retryable(
    fake: FakeFal, make_provider: Callable[..., FalProvider]
) -> None:
    # given fal answers a submit without a request id
    fake.behave(submit_answer="no_request_id")

    # when generating, then it fails for good
    with pytest.raises(ProviderError) as caught:
        await make_provider().generate(REQUEST, reporter=Recorder(fake))
    assert caught.value.retryable is False
    assert "request_id" in caught.value.message


# -- fal: flaky polls and timeouts ---------------------------------------------


async def test_transient_status_errors_are_ridden_out(
    fake: FakeFal, make_provider: Callable[..., FalProvider]
) -> None:
    # given three 503s in a row while polling, and three tolerated
    fake.behave(status_errors=3)

    # when generating
    result = await make_provider(max_poll_errors=3).generate(REQUEST, reporter=Recorder(fake))

    # then it completed after the failed polls plus the six normal ones
    assert result.seed == fake.scenario.seed
    assert fake.calls["status"] == 3 + 6
    assert fake.calls["submit"] == 1


async def test_persistent_status_errors_give_up_retryable(
    fake: FakeFal, make_provider: Callable[..., FalProvider]
) -> None:
    # given status polls that keep failing
    fake.behave(status_errors=100)
    reporter = Recorder(fake)

    # when generating with two failures tolerated
    with pytest.raises(ProviderError) as caught:
        await make_provider(max_poll_errors=2).generate(REQUEST, reporter=reporter)

    # then it gives up after the third failure in a row, retryable (a later attempt resumes the request)
    assert caught.value.retryable is True
    assert "503" in caught.value.message
    assert fake.calls["status"] == 3
    assert len(reporter.submitted_ids) == 1


async def test_a_hanging_submit_times_out_retryable(
    fake: FakeFal, make_provider: Callable[..., FalProvider]
) -> None:
    # given fal does not answer submits in time
    fake.behave(hang="submit", hang_seconds=0.6)
    reporter = Recorder(fake)

    # when generating with a short per-call timeout
    with pytest.raises(ProviderError) as caught:
        await make_provider(request_timeout=0.2).generate(REQUEST, reporter=reporter)

    # then it is a retryable timeout, no request id was reported, and the (paid) POST was sent once, never again
    assert caught.value.retryable is True
    assert "timed out" in caught.value.message
    assert reporter.submitted_ids == []
    assert fake.calls["submit"] == 1


async def test_hanging_status_polls_give_up_retryable(
    fake: FakeFal, make_provider: Callable[..., FalProvider]
) -> None:
    # given status polls that never answer in time
    fake.behave(hang="status", hang_seconds=0.6)

    # when generating with a short per-call timeout and one failure tolerated
    with pytest.raises(ProviderError) as caught:
        await make_provider(request_timeout=0.1, max_poll_errors=1).generate(REQUEST, reporter=Recorder(fake))

    # then it gives up, retryable, after two timed-out polls
    assert caught.value.retryable is True
    assert "timed out" in caught.value.message
    assert fake.calls["status"] == 2


async def test_the_overall_deadline_is_retryable_and_says_so(
    fake: FakeFal, make_provider: Callable[..., FalProvider]
) -> None:
    # given a request that stays in progress forever
    fake.behave(polls_before_done=1_000_000)

    # when generating with a 0.3 s budget
    with pytest.raises(ProviderError) as caught:
        await make_provider(timeout=0.3).generate(REQUEST, reporter=Recorder(fake))

    # then it stops, retryable, saying it timed out after 0.3 s
    assert caught.value.retryable is True
    assert "timed out after 0.3 s" in caught.value.message
    assert fake.calls["result"] == 0


# -- fal: answers that cannot be used ---------------------------------------------


@pytest.mark.parametrize("kind", ["malformed", "no_images", "missing_url", "bad_url", "bad_seed", "error_detail"])
async def test_unusable_results_are_not_retryable(
    fake: FakeFal, make_provider: Callable[..., FalProvider], kind: str
) -> None:
    # given a completed request whose result is unusable in this way
    fake.behave(result=kind)

    # when generating
    with pytest.raises(ProviderError) as caught:
        await make_provider().generate(REQUEST, reporter=Recorder(fake))

    # then it fails for good after one result fetch
    assert caught.value.retryable is False
    assert fake.calls["result"] == 1


async def test_a_request_fal_failed_is_not_retryable(
    fake: FakeFal, make_provider: Callable[..., FalProvider]
) -> None:
    # given fal's status ends in ERROR
    fake.behave(final_status="ERROR")

    # when generating
    with pytest.raises(ProviderError) as caught:
        await make_provider().generate(REQUEST, reporter=Recorder(fake))

    # then it fails for good, with fal's reason, without fetching a result
    assert caught.value.retryable is False
    assert "runner crashed" in caught.value.message
    assert fake.calls["result"] == 0


# -- fal: cancel ---------------------------------------------------------------


async def test_cancel_puts_to_the_request_cancel_url(
    fake: FakeFal, make_provider: Callable[..., FalProvider]
) -> None:
    # given a submitted request
    request_id = fake.enqueue(MODEL)

    # when it is cancelled
    await make_provider().cancel(model_key=MODEL, request_id=request_id)

    # then fal got a PUT on the app's cancel URL
    assert fake.cancelled == [request_id]
    assert ("PUT", f"/{APP}/requests/{request_id}/cancel") in fake.paths


@pytest.mark.parametrize("where", ["down", "unknown"])
async def test_cancel_never_raises(
    fake: FakeFal,
    make_provider: Callable[..., FalProvider],
    caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    # given a queue that is down, or a request it does not know
    caplog.set_level(logging.DEBUG)
    provider = make_provider(queue_url=dead_url()) if where == "down" else make_provider()

    # when cancelling, then nothing is raised, a warning is logged, and the key is not in it
    await provider.cancel(model_key=MODEL, request_id="req-1")
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert any("req-1" in record.getMessage() for record in warnings)
    assert fake.key not in caplog.text


async def test_a_hanging_cancel_gives_up_after_one_call_timeout(
    fake: FakeFal, make_provider: Callable[..., FalProvider], caplog: pytest.LogCaptureFixture
) -> None:
    # given a queue that does not answer cancels in time
    request_id = fake.enqueue(MODEL)
    fake.behave(hang="cancel", hang_seconds=1.0)
    caplog.set_level(logging.WARNING)

    # when cancelling with a short per-call timeout
    await make_provider(request_timeout=0.2).cancel(model_key=MODEL, request_id=request_id)

    # then it gave up after that one call (no retry loop holds the worker), with a warning
    assert fake.calls["cancel"] == 1
    assert any(request_id in record.getMessage() for record in caplog.records)


# -- download_image ------------------------------------------------------------------


async def test_download_returns_the_body(fake: FakeFal, http: httpx.AsyncClient) -> None:
    # given an image on the fake
    fake.behave(image_size=(32, 48))

    # when downloaded, then the bytes are the served PNG
    body = await download_image(http, fake.file_url("r1"), max_bytes=1_000_000, timeout=5, addresses=LOCAL)
    assert body == fake.png()
    assert body.startswith(b"\x89PNG")


async def test_download_follows_up_to_three_redirects(fake: FakeFal, http: httpx.AsyncClient) -> None:
    # given an image behind three redirects, then it is fetched
    body = await download_image(http, fake.file_url("r1", hops=3), max_bytes=1_000_000, timeout=5, addresses=LOCAL)
    assert body == fake.png()

    # given one behind four, then it is refused for good
    with pytest.raises(DownloadError) as caught:
        await download_image(http, fake.file_url("r1", hops=4), max_bytes=1_000_000, timeout=5, addresses=LOCAL)
    assert caught.value.retryable is False
    assert "redirected more than 3" in caught.value.message


@pytest.mark.parametrize("streamed", [False, True])
async def test_download_refuses_a_body_over_the_cap(fake: FakeFal, http: httpx.AsyncClient, streamed: bool) -> None:
    # given an image one byte over the cap, announced by Content-Length or only streamed
    fake.behave(file_streamed=streamed)
    cap = len(fake.png()) - 1

    # when downloaded, then it is refused for good
    with pytest.raises(DownloadError) as caught:
        await download_image(http, fake.file_url("r1"), max_bytes=cap, timeout=5, addresses=LOCAL)
    assert caught.value.retryable is False
    assert f"more than {cap}" in caught.value.message


@pytest.mark.parametrize(("code", "retryable"), [(404, False), (403, False), (500, True), (503, True), (429, True)])
async def test_download_errors(fake: FakeFal, http: httpx.AsyncClient, code: int, retryable: bool) -> None:
    # given the file answers with this code
    fake.behave(file_status=code)

    # when downloaded, then only server trouble is retryable
    with pytest.raises(DownloadError) as caught:
        await download_image(http, fake.file_url("r1"), max_bytes=1_000_000, timeout=5, addresses=LOCAL)
    assert caught.value.retryable is retryable
    assert str(code) in caught.value.message


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/a.png", "data:image/png;base64,AAAA", "a.png"]
)
async def test_download_refuses_non_http_urls(fake: FakeFal, http: httpx.AsyncClient, url: str) -> None:
    # given a URL that is not http(s), when downloaded, then it is refused before any request
    with pytest.raises(DownloadError) as caught:
        await download_image(http, url, max_bytes=1_000_000, timeout=5, addresses=LOCAL)
    assert caught.value.retryable is False
    assert sum(fake.calls.values()) == 0


async def test_download_timeouts_and_dead_hosts_are_retryable(fake: FakeFal, http: httpx.AsyncClient) -> None:
    # given a file that never arrives in time
    fake.behave(hang="file", hang_seconds=0.6)

    # when downloaded with a short timeout, then it is retryable
    with pytest.raises(DownloadError) as caught:
        await download_image(http, fake.file_url("r1"), max_bytes=1_000_000, timeout=0.2, addresses=LOCAL)
    assert caught.value.retryable is True
    assert "timed out" in caught.value.message

    # given a host nothing listens on, then that is retryable too
    with pytest.raises(DownloadError) as caught:
        await download_image(http, f"{dead_url()}/a.png", max_bytes=1_000_000, timeout=5, addresses=LOCAL)
    assert caught.value.retryable is True


async def test_fals_logs_asked_with_logs_1_give_the_message_and_a_bars_percent(
    fake: FakeFal, make_provider: Callable[..., FalProvider]
) -> None:
    """Given a fal request whose status shows log entries only when asked with ?logs=1, one more each
    IN_PROGRESS poll, when generated, then the provider asked for them: each new last message is reported (the
    percent of the last bar among them), control characters stripped, and COMPLETED keeps the last one."""
    fake.behave(
        queue_positions=(1,), polls_before_done=4,
        logs=("Loading model", "\x1b[33m 40%|████      | 8/20\x1b[0m", "Uploading image"),
    )
    provider: ImageProvider = make_provider()
    reporter = Recorder(fake)

    await provider.generate(REQUEST, reporter=reporter)

    assert reporter.reported == [
        ProviderProgress("IN_QUEUE", 1),
        ProviderProgress("IN_PROGRESS", None, message="Loading model"),
        ProviderProgress("IN_PROGRESS", None, percent=40, message="40%|████ | 8/20"),
        ProviderProgress("IN_PROGRESS", None, percent=40, message="Uploading image"),
        ProviderProgress("COMPLETED", None, percent=40, message="Uploading image"),
    ]
