"""The Replicate provider against a fake Replicate API over real HTTP (tests/fake_replicate.py).

No database here: these tests use neither ``pool`` nor ``graphql``.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from pipeline.providers.interface import ImageProvider, ImageRequest, ProviderError, ProviderProgress
from pipeline.providers.replicate import ReplicateConfig, ReplicateProvider, creation
from storage.enums import Quality
from tests.fake_replicate import SDXL_MODEL, SDXL_VERSION, FakeReplicate

REQUEST = ImageRequest(model_key=SDXL_MODEL, prompt="a silver-haired alchemist", seed=1234, quality=Quality.HIGH)
QUEUED, RUNNING, DONE = (ProviderProgress(word) for word in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED"))


@dataclass
class Recorder:
    """A ProgressReporter that remembers what it was told, and how many polls had happened by then."""

    fake: FakeReplicate
    events: list[tuple[str, Any]] = field(default_factory=list)
    polls_when_submitted: int | None = None

    async def submitted(self, request_id: str) -> None:
        self.polls_when_submitted = self.fake.calls["get"]
        self.events.append(("submitted", request_id))

    async def progress(self, progress: ProviderProgress) -> None:
        self.events.append(("progress", progress))

    @property
    def submitted_ids(self) -> list[str]:
        return [value for kind, value in self.events if kind == "submitted"]

    @property
    def details(self) -> list[ProviderProgress]:
        """Every report, percent and message included."""
        return [value for kind, value in self.events if kind == "progress"]

    @property
    def reported(self) -> list[ProviderProgress]:
        """The statuses reported, in order, a run of reports with one status (its percent rising) counted once."""
        statuses: list[ProviderProgress] = []
        for progress in self.details:
            status = ProviderProgress(progress.status, progress.queue_position)
            if not statuses or statuses[-1] != status:
                statuses.append(status)
        return statuses


@pytest.fixture
def fake(fake_replicate_server: FakeReplicate) -> FakeReplicate:
    fake_replicate_server.reset()
    return fake_replicate_server


@pytest.fixture
async def make_provider(fake: FakeReplicate) -> AsyncIterator[Callable[..., ReplicateProvider]]:
    """ReplicateProvider on the fake with tiny intervals; keyword arguments override the config."""
    providers: list[ReplicateProvider] = []

    def make(**overrides: Any) -> ReplicateProvider:
        settings: dict[str, Any] = {
            "token": fake.token,
            "api_url": fake.url,
            "poll_interval": 0.01,
            "timeout": 5.0,
            "request_timeout": 2.0,
            "max_poll_errors": 3,
        }
        provider = ReplicateProvider(ReplicateConfig(**{**settings, **overrides}))
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        await provider.close()


def dead_url() -> str:
    """A local URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- the happy path ---------------------------------------------------------------


async def test_generate_creates_one_prediction_reports_its_id_first_and_each_status_once(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given a prediction that starts, processes, then succeeds with a list of URLs, when generated, then the
    prediction id is reported before any poll, each status once in order, and the result is its first URL."""
    fake.behave(polls_starting=2, polls_before_done=5)
    provider: ImageProvider = make_provider()
    reporter = Recorder(fake)

    result = await provider.generate(REQUEST, reporter=reporter)

    (prediction_id,) = reporter.submitted_ids
    assert reporter.events[0] == ("submitted", prediction_id) and reporter.polls_when_submitted == 0
    assert reporter.reported == [QUEUED, RUNNING, DONE]
    assert result.image_url == fake.file_url(prediction_id)
    assert result.seed == 1234 and result.image_bytes is None
    # one paid creation, on the version endpoint, with SDXL's input built from the request
    assert fake.calls["create"] == 1 and fake.calls["get"] == 6
    assert ("POST", "/v1/predictions") in fake.paths
    assert fake.creations == [
        {
            "version": SDXL_VERSION,
            "input": {
                "prompt": REQUEST.prompt,
                "width": 1024,
                "height": 1024,
                "num_outputs": 1,
                "num_inference_steps": 50,
                "seed": 1234,
            },
        }
    ]
    # and every call carried the token as a bearer token
    assert {header for _, header in fake.authorizations} == {f"Bearer {fake.token}"}


async def test_an_official_model_is_created_on_its_model_endpoint_without_a_version(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given a model key without a version (an official model), when generated, then the prediction is created
    with POST /v1/models/{owner}/{name}/predictions and a body without a version."""
    request = ImageRequest(model_key="stability-ai/sdxl", prompt="p", seed=7, quality=Quality.HIGH)

    result = await make_provider().generate(request, reporter=Recorder(fake))

    assert result.image_url is not None
    assert ("POST", "/v1/models/stability-ai/sdxl/predictions") in fake.paths
    (body,) = fake.creations
    assert "version" not in body and body["input"]["prompt"] == "p"


async def test_fast_quality_takes_fewer_steps_and_a_seed_left_open_comes_back_from_the_logs(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given a fast 960x1024 request without a seed, when generated, then 25 steps and that size were asked
    for, no seed was sent, and the seed the model logged ("Using seed: N") is the result's."""
    fake.behave(seed_logged=987654)
    request = ImageRequest(model_key=SDXL_MODEL, prompt="p", seed=None, quality=Quality.FAST, width=960, height=1024)

    result = await make_provider().generate(request, reporter=Recorder(fake))

    (body,) = fake.creations
    assert body["input"]["num_inference_steps"] == 25
    assert (body["input"]["width"], body["input"]["height"]) == (960, 1024)
    assert "seed" not in body["input"]
    assert result.seed == 987654


async def test_an_output_that_is_a_single_url_is_used_too(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given a model whose output is one URL rather than a list, when generated, then that URL is the result."""
    fake.behave(output="string")
    reporter = Recorder(fake)

    result = await make_provider().generate(REQUEST, reporter=reporter)

    assert result.image_url == fake.file_url(reporter.submitted_ids[0])


def test_the_creation_request_is_built_in_one_place() -> None:
    """Given requests for a version and for an official model, when their creation is built, then each goes to its
    endpoint with the same input (where a webhook URL would be added)."""
    versioned = creation(REQUEST)
    official = creation(ImageRequest(model_key="black-forest-labs/flux-dev", prompt="p", seed=None,
                                     quality=Quality.FAST))

    assert versioned.path == "/v1/predictions" and versioned.body["version"] == SDXL_VERSION
    assert official.path == "/v1/models/black-forest-labs/flux-dev/predictions" and "version" not in official.body
    assert official.body["input"] == {
        "prompt": "p", "width": 1024, "height": 1024, "num_outputs": 1, "num_inference_steps": 25,
    }


@pytest.mark.parametrize("model_key", ["sdxl", "a/b/c", "owner/name:", "/name", "owner/na me"])
async def test_a_model_key_that_is_not_a_replicate_reference_fails_for_good_without_a_call(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider], model_key: str
) -> None:
    """Given a model key Replicate could not name, when generated, then it fails for good and nothing was sent."""
    request = ImageRequest(model_key=model_key, prompt="p", seed=1, quality=Quality.HIGH)

    with pytest.raises(ProviderError) as caught:
        await make_provider().generate(request, reporter=Recorder(fake))

    assert caught.value.retryable is False and "not a Replicate model reference" in caught.value.message
    assert sum(fake.calls.values()) == 0


async def test_the_predictions_own_urls_are_not_followed_so_the_token_stays_with_the_api(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given predictions whose urls.get and urls.cancel point at another server, when generated and canceled,
    then that server never hears from the provider (nor sees the token): every call went to the API URL."""
    with FakeReplicate(token="other-token") as elsewhere:
        fake.behave(urls_base=elsewhere.url)
        provider = make_provider()
        reporter = Recorder(fake)

        await provider.generate(REQUEST, reporter=reporter)
        await provider.cancel(model_key=SDXL_MODEL, request_id=reporter.submitted_ids[0])

        assert sum(elsewhere.calls.values()) == 0
    assert fake.calls["get"] >= 1 and fake.calls["cancel"] == 1


# -- resumes, refusals ----------------------------------------------------------------


async def test_resume_polls_the_earlier_prediction_without_creating_another(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given a prediction an earlier attempt created (and paid for) with seed 555, when resumed by its id with
    another seed drawn, then nothing is created, its output comes back, and the seed is the one it was made with."""
    prediction_id = fake.enqueue(seed=555)
    reporter = Recorder(fake)

    result = await make_provider().generate(REQUEST, reporter=reporter, request_id=prediction_id)

    assert fake.calls["create"] == 0 and reporter.submitted_ids == []
    assert result.image_url == fake.file_url(prediction_id)
    assert result.seed == 555 and REQUEST.seed != 555
    assert reporter.reported[-1] == DONE


async def test_resuming_a_prediction_replicate_does_not_know_fails_for_good(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given an id Replicate never heard of, when resumed, then it fails for good without creating one."""
    with pytest.raises(ProviderError) as caught:
        await make_provider().generate(REQUEST, reporter=Recorder(fake), request_id="nosuchprediction")

    assert caught.value.retryable is False
    assert "does not know prediction nosuchprediction" in caught.value.message
    assert fake.calls["create"] == 0


async def test_a_wrong_token_is_refused_for_good_and_never_shown(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider], caplog: pytest.LogCaptureFixture
) -> None:
    """Given a token Replicate does not accept, when generating, then it fails for good saying 401, and the token is
    in neither the message nor the logs."""
    caplog.set_level(logging.DEBUG)
    reporter = Recorder(fake)

    with pytest.raises(ProviderError) as caught:
        await make_provider(token="r8_wrong_secret_token").generate(REQUEST, reporter=reporter)

    assert caught.value.retryable is False and "401" in caught.value.message
    assert "r8_wrong_secret_token" not in caught.value.message and "r8_wrong_secret_token" not in caplog.text
    assert reporter.events == [] and fake.creations == []


async def test_input_the_model_refuses_is_422_and_its_message_is_kept(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given a size the model refuses, when generating, then it fails for good with Replicate's reason (which field
    and why), and nothing was created."""
    request = ImageRequest(model_key=SDXL_MODEL, prompt="p", seed=1, quality=Quality.HIGH, width=2048, height=2048)
    reporter = Recorder(fake)

    with pytest.raises(ProviderError) as caught:
        await make_provider().generate(request, reporter=reporter)

    assert caught.value.retryable is False
    assert "422" in caught.value.message and "Input validation failed" in caught.value.message
    assert "input.width: Must be less than or equal to 1024" in caught.value.message
    assert reporter.submitted_ids == [] and fake.creations == [] and fake.calls["create"] == 1


@pytest.mark.parametrize(
    ("code", "retryable"), [(500, True), (502, True), (503, True), (400, False), (403, False), (404, False)]
)
async def test_creation_refusals(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider], code: int, retryable: bool
) -> None:
    """Given Replicate answers creations with this code, when generating, then 5xx may be retried and other 4xx
    may not; the (maybe paid) POST was sent once, and nothing was reported as created."""
    fake.behave(create_errors=None, create_error_status=code)
    reporter = Recorder(fake)

    with pytest.raises(ProviderError) as caught:
        await make_provider().generate(REQUEST, reporter=reporter)

    assert caught.value.retryable is retryable
    assert str(code) in caught.value.message
    assert reporter.submitted_ids == [] and fake.calls["create"] == 1


async def test_a_prediction_that_fails_ends_with_its_error(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given a prediction that fails on Replicate's side, when generating, then it fails for good with Replicate's
    error, after reporting the statuses it went through."""
    fake.behave(final_status="failed", error="CUDA out of memory (fake)")
    reporter = Recorder(fake)

    with pytest.raises(ProviderError) as caught:
        await make_provider().generate(REQUEST, reporter=reporter)

    prediction_id = reporter.submitted_ids[0]
    assert caught.value.retryable is False
    assert caught.value.message == f"prediction {prediction_id} failed: CUDA out of memory (fake)"
    assert reporter.reported == [QUEUED, RUNNING]


async def test_a_prediction_canceled_at_replicate_ends_the_request(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given a prediction someone canceled on Replicate, when generating, then it fails for good saying so."""
    fake.behave(final_status="canceled")

    with pytest.raises(ProviderError) as caught:
        await make_provider().generate(REQUEST, reporter=Recorder(fake))

    assert caught.value.retryable is False and " canceled: no reason given" in caught.value.message


@pytest.mark.parametrize("output", ["empty", "bad_url"])
async def test_a_success_without_a_usable_url_fails_for_good(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider], output: str
) -> None:
    """Given a succeeded prediction whose output has no http(s) URL, when generating, then it fails for good."""
    fake.behave(output=output)

    with pytest.raises(ProviderError) as caught:
        await make_provider().generate(REQUEST, reporter=Recorder(fake))

    assert caught.value.retryable is False and "without an http(s) image URL" in caught.value.message


# -- 429s: waited out as told, within the deadline ----------------------------------------


async def test_a_429_on_creation_is_waited_out_as_retry_after_says_then_created_once(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given one 429 with Retry-After 0.3 on the creation, when generating, then the provider waits that long,
    sends it again, and exactly one prediction exists."""
    fake.behave(rate_limited=1, rate_limited_kinds=("create",), retry_after="0.3")
    started = time.monotonic()

    result = await make_provider().generate(REQUEST, reporter=Recorder(fake))

    assert time.monotonic() - started >= 0.3
    assert result.image_url is not None
    assert fake.calls["create"] == 2 and len(fake.creations) == 1


async def test_429s_while_polling_are_waited_out_and_do_not_count_as_failures(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given four 429s in a row on polls (more than the 3 poll failures tolerated), when generating, then each is
    waited out and the prediction completes."""
    fake.behave(rate_limited=4, rate_limited_kinds=("get",), retry_after="0.02")

    result = await make_provider(max_poll_errors=3).generate(REQUEST, reporter=Recorder(fake))

    assert result.image_url is not None and fake.calls["get"] == 4 + 5


async def test_a_retry_after_given_as_an_http_date_is_waited_out(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given a 429 whose Retry-After is an HTTP date two seconds ahead, when generating, then the provider waits
    until about then (the date has whole seconds) and completes."""
    fake.behave(rate_limited=1, rate_limited_kinds=("create",),
                retry_after=format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True))
    started = time.monotonic()

    result = await make_provider().generate(REQUEST, reporter=Recorder(fake))

    assert 0.9 <= time.monotonic() - started < 4
    assert result.image_url is not None and len(fake.creations) == 1


async def test_a_429_without_retry_after_waits_one_poll_interval(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given a 429 without Retry-After, when generating with a 0.2 s poll interval, then that is the wait."""
    fake.behave(rate_limited=1, rate_limited_kinds=("create",), retry_after=None, polls_before_done=0)
    started = time.monotonic()

    await make_provider(poll_interval=0.2).generate(REQUEST, reporter=Recorder(fake))

    assert time.monotonic() - started >= 0.2 and len(fake.creations) == 1


async def test_a_retry_after_past_the_deadline_gives_up_at_once_retryable(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given a 429 asking for 30 s against a 2 s budget, when generating, then it gives up at once, retryable,
    saying why, with nothing created."""
    fake.behave(rate_limited=1, rate_limited_kinds=("create",), retry_after="30")
    started = time.monotonic()

    with pytest.raises(ProviderError) as caught:
        await make_provider(timeout=2.0).generate(REQUEST, reporter=Recorder(fake))

    assert time.monotonic() - started < 1
    assert caught.value.retryable is True
    assert "429" in caught.value.message and "waiting 30 s would pass the 2 s deadline" in caught.value.message
    assert fake.creations == []


async def test_429s_beyond_the_allowed_run_give_up_retryable(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given endless 429s, when generating with two waits allowed, then it gives up after the third, retryable."""
    fake.behave(rate_limited=100, retry_after="0.01")

    with pytest.raises(ProviderError) as caught:
        await make_provider(max_rate_limited=2).generate(REQUEST, reporter=Recorder(fake))

    assert caught.value.retryable is True and "3 times in a row" in caught.value.message
    assert fake.calls["create"] == 3 and fake.creations == []


# -- flaky polls and timeouts -------------------------------------------------------------


async def test_transient_poll_errors_are_ridden_out(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given three 503s in a row while polling and three tolerated, when generating, then it completes, created
    once."""
    fake.behave(get_errors=3)

    result = await make_provider(max_poll_errors=3).generate(REQUEST, reporter=Recorder(fake))

    assert result.image_url is not None
    assert fake.calls["get"] == 3 + 5 and fake.calls["create"] == 1


async def test_persistent_poll_errors_give_up_retryable_with_the_prediction_kept(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given polls that keep failing, when generating with two failures tolerated, then it gives up after the third,
    retryable, the prediction id already reported (a retry resumes it)."""
    fake.behave(get_errors=100)
    reporter = Recorder(fake)

    with pytest.raises(ProviderError) as caught:
        await make_provider(max_poll_errors=2).generate(REQUEST, reporter=reporter)

    assert caught.value.retryable is True and "503" in caught.value.message
    assert fake.calls["get"] == 3 and len(reporter.submitted_ids) == 1


async def test_a_hanging_creation_times_out_retryable_and_is_sent_once(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given a creation that is not answered in time, when generating with a short call timeout, then it is a
    retryable timeout and the POST was never sent again."""
    fake.behave(hang="create", hang_seconds=0.6)
    reporter = Recorder(fake)

    with pytest.raises(ProviderError) as caught:
        await make_provider(request_timeout=0.2).generate(REQUEST, reporter=reporter)

    assert caught.value.retryable is True and "timed out" in caught.value.message
    assert reporter.submitted_ids == [] and fake.calls["create"] == 1


async def test_the_overall_deadline_is_retryable_and_says_so(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given a prediction that never finishes, when generating with a 0.3 s budget, then it stops, retryable."""
    fake.behave(polls_before_done=1_000_000)

    with pytest.raises(ProviderError) as caught:
        await make_provider(timeout=0.3).generate(REQUEST, reporter=Recorder(fake))

    assert caught.value.retryable is True and "timed out after 0.3 s" in caught.value.message


# -- cancel ---------------------------------------------------------------------------------


async def test_cancel_posts_to_the_predictions_cancel_endpoint(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given a created prediction, when canceled, then Replicate got POST /v1/predictions/{id}/cancel and the
    prediction reads canceled afterwards."""
    prediction_id = fake.enqueue()
    provider = make_provider()

    await provider.cancel(model_key=SDXL_MODEL, request_id=prediction_id)

    assert fake.cancelled == [prediction_id]
    assert ("POST", f"/v1/predictions/{prediction_id}/cancel") in fake.paths
    with pytest.raises(ProviderError) as caught:
        await provider.generate(REQUEST, reporter=Recorder(fake), request_id=prediction_id)
    assert f"prediction {prediction_id} canceled" in caught.value.message


async def test_a_rate_limited_cancel_is_sent_again_after_its_retry_after(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given a 429 on the cancel, when canceling, then it waits as told and cancels (stopping the spend matters)."""
    prediction_id = fake.enqueue()
    fake.behave(rate_limited=1, rate_limited_kinds=("cancel",), retry_after="0.05")

    await make_provider().cancel(model_key=SDXL_MODEL, request_id=prediction_id)

    assert fake.calls["cancel"] == 2 and fake.cancelled == [prediction_id]


@pytest.mark.parametrize("where", ["down", "unknown", "hanging"])
async def test_cancel_never_raises(
    fake: FakeReplicate,
    make_provider: Callable[..., ReplicateProvider],
    caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    """Given an API that is down, a prediction it does not know, or a cancel that hangs, when canceling, then
    nothing is raised, one call at most was made, and a warning without the token is logged."""
    caplog.set_level(logging.DEBUG)
    if where == "hanging":
        fake.behave(hang="cancel", hang_seconds=1.0)
    provider = make_provider(api_url=dead_url()) if where == "down" else make_provider(request_timeout=0.2)

    await provider.cancel(model_key=SDXL_MODEL, request_id="pred1")

    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert any("pred1" in record.getMessage() for record in warnings)
    assert fake.token not in caplog.text
    assert fake.calls["cancel"] == (0 if where == "down" else 1)


async def test_the_logs_progress_bar_gives_a_rising_percent_and_its_last_line_the_message(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    """Given a prediction whose logs grow a tqdm bar (redrawn with carriage returns) as it processes, when
    generated, then each change is reported once: no percent nor message while starting, then a percent that
    rises to 100 with the bar's line as the message."""
    fake.behave(polls_starting=1, polls_before_done=5)
    provider: ImageProvider = make_provider()
    reporter = Recorder(fake)

    await provider.generate(REQUEST, reporter=reporter)

    details = reporter.details
    assert details[0] == QUEUED
    percents = [progress.percent for progress in details[1:] if progress.percent is not None]
    assert len(percents) == len(details) - 1, details
    assert percents == sorted(percents) and len(set(percents)) == len(percents) >= 3, details
    assert 0 < percents[0] < 100 and percents[-1] == 100
    final = details[-1]
    assert final.status == "COMPLETED" and final.message == "100%|██████████| 50/50 [00:01<00:01, 7.60it/s]"
    assert all(progress.message and "\r" not in progress.message for progress in details[1:])
