"""The local provider: real, replayable PNG portraits drawn off the event loop."""

from __future__ import annotations

import io
import threading
import time

import pytest
from PIL import Image, ImageChops

from pipeline.providers import local
from pipeline.providers.interface import ImageRequest, ProviderError, ProviderProgress
from pipeline.providers.local import MAX_SEED, LocalProvider
from storage.enums import Quality


class RecordingReporter:
    def __init__(self) -> None:
        self.request_ids: list[str] = []
        self.progress_reports: list[ProviderProgress] = []

    async def submitted(self, request_id: str) -> None:
        self.request_ids.append(request_id)

    async def progress(self, progress: ProviderProgress) -> None:
        self.progress_reports.append(progress)


def request(prompt: str = "a silver-haired alchemist", seed: int | None = 42, **size: int) -> ImageRequest:
    return ImageRequest(
        model_key="local", prompt=prompt, seed=seed, quality=Quality.FAST,
        width=size.get("width", 1024), height=size.get("height", 1024),
    )


async def generate(req: ImageRequest, provider: LocalProvider | None = None) -> tuple[int | None, bytes]:
    result = await (provider or LocalProvider()).generate(req, reporter=RecordingReporter())
    assert result.image_bytes is not None and result.content_type == "image/png"
    return result.seed, result.image_bytes


def pixels_differ(a: bytes, b: bytes) -> bool:
    with Image.open(io.BytesIO(a)) as first, Image.open(io.BytesIO(b)) as second:
        return ImageChops.difference(first.convert("RGB"), second.convert("RGB")).getbbox() is not None


@pytest.mark.parametrize(("width", "height"), [(1024, 1024), (768, 1344), (1344, 768), (64, 48)])
async def test_renders_a_png_of_the_requested_size(width: int, height: int) -> None:
    # given a request for a given size
    # when it is generated
    seed, png = await generate(request(width=width, height=height))

    # then the bytes are a PNG of that size, with the requested seed, and more than one colour
    with Image.open(io.BytesIO(png)) as image:
        assert (image.format, image.size) == ("PNG", (width, height))
        assert len(image.convert("RGB").getcolors(maxcolors=10_000) or ()) > 10
    assert seed == 42


async def test_the_default_size_is_1024_square() -> None:
    # given a request that names no size, when it is generated
    _, png = await generate(request())

    # then the portrait is 1024x1024
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (1024, 1024)


async def test_same_prompt_and_seed_give_identical_bytes() -> None:
    # given two providers, when both render the same prompt and seed
    _, first = await generate(request(seed=7), LocalProvider())
    _, second = await generate(request(seed=7), LocalProvider())

    # then the PNGs are byte for byte the same
    assert first == second


@pytest.mark.parametrize(
    "other", [request(seed=8), request(prompt="a sleepy dragon tamer", seed=7), request(prompt="", seed=7)]
)
async def test_another_seed_or_prompt_gives_another_picture(other: ImageRequest) -> None:
    # given a portrait for (prompt, seed 7)
    _, base = await generate(request(seed=7))

    # when another seed or prompt is rendered
    _, changed = await generate(other)

    # then the picture itself differs, not only its bytes
    assert changed != base
    assert pixels_differ(changed, base)


async def test_many_seeds_give_many_pictures() -> None:
    # given one prompt, when twenty seeds are rendered
    pictures = {(await generate(request(seed=seed, width=128, height=128)))[1] for seed in range(20)}

    # then every one is distinct
    assert len(pictures) == 20


async def test_without_a_seed_one_is_chosen_and_replays() -> None:
    # given a request without a seed
    # when it is generated
    seed, png = await generate(request(seed=None))

    # then a signed 32-bit, non-negative seed comes back, and rendering it again gives the same bytes
    assert isinstance(seed, int) and 0 <= seed <= MAX_SEED == 2**31 - 1
    assert (await generate(request(seed=seed)))[1] == png


async def test_reports_in_progress_once_and_submits_nothing() -> None:
    # given a reporter that records what it is told
    reporter = RecordingReporter()

    # when a portrait is generated, resuming a made-up request id (which is ignored)
    result = await LocalProvider().generate(request(), reporter=reporter, request_id="earlier-request")

    # then IN_PROGRESS was reported once, and no paid request was ever recorded
    assert reporter.progress_reports == [ProviderProgress("IN_PROGRESS")]
    assert reporter.request_ids == []
    assert result.image_bytes is not None


async def test_latency_delays_the_result() -> None:
    # given a provider that simulates 0.2 s of remote latency
    provider = LocalProvider(latency_seconds=0.2)

    # when a portrait is generated
    started = time.monotonic()
    await generate(request(width=64, height=64), provider)

    # then it took at least that long
    assert time.monotonic() - started >= 0.2


async def test_renders_in_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a renderer that notes which thread runs it
    threads: list[int] = []
    render = local.render_portrait

    def spying_render(prompt: str, seed: int, width: int, height: int) -> bytes:
        threads.append(threading.get_ident())
        return render(prompt, seed, width, height)

    monkeypatch.setattr(local, "render_portrait", spying_render)

    # when a portrait is generated
    await generate(request())

    # then it was drawn outside the event loop's thread
    assert threads and threads[0] != threading.get_ident()


@pytest.mark.parametrize(("width", "height"), [(0, 1024), (1024, -1), (8192, 1024)])
async def test_refuses_sizes_it_cannot_draw(width: int, height: int) -> None:
    # given a request for an empty or enormous image
    # when it is generated, then the provider refuses it for good
    with pytest.raises(ProviderError) as refused:
        await generate(request(width=width, height=height))
    assert refused.value.retryable is False


async def test_cancel_and_close_are_harmless() -> None:
    # given a provider
    provider = LocalProvider()

    # when a request is cancelled and the provider closed
    await provider.cancel(model_key="local", request_id="anything")
    await provider.close()

    # then it still renders (nothing was torn down that mattered)
    assert (await generate(request(width=32, height=32), provider))[1].startswith(b"\x89PNG")


def test_negative_latency_is_refused() -> None:
    # given / when a provider is built with a negative latency, then it is refused
    with pytest.raises(ValueError, match="latency"):
        LocalProvider(latency_seconds=-1)
