"""The local renderer visibly uses a reference image: its colours and a framed inset, checked pixel by pixel."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipeline.providers.interface import ImageReference, ImageRequest, ProviderError, ProviderProgress
from pipeline.providers.local import INSET_FRAME_COLOR, LocalProvider, inset_box, inset_frame, render_portrait
from storage.enums import Quality

RGB = tuple[int, int, int]
# Four flat colours in blocks of different areas, so "most common first" has one answer:
# the left half is RED, the top right quarter GREEN, the bottom right quarter split BLUE (left) and GOLD (right).
RED: RGB = (200, 30, 40)
GREEN: RGB = (20, 160, 60)
BLUE: RGB = (30, 60, 210)
GOLD: RGB = (230, 190, 20)


def reference_png(side: int = 200) -> bytes:
    image = Image.new("RGB", (side, side), RED)
    half, quarter = side // 2, side // 4
    image.paste(GREEN, (half, 0, side, half))
    image.paste(BLUE, (half, half, half + quarter, side))
    image.paste(GOLD, (half + quarter, half, side, side))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def rgb(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def close(a: object, b: RGB, tolerance: int = 3) -> bool:
    assert isinstance(a, tuple)
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


class Reporter:
    async def submitted(self, request_id: str) -> None:
        """The local renderer submits nothing."""

    async def progress(self, progress: ProviderProgress) -> None:
        """Not checked here."""


def test_the_background_takes_the_references_most_common_colour() -> None:
    """Given a reference whose most common colour is RED, when a portrait is rendered with it, then the top band
    of the background (the first sky colour, unshaded at the top edge) is exactly RED."""
    # when
    image = rgb(render_portrait("a knight", 7, 256, 256, reference_png()))
    # then
    assert image.getpixel((1, 1)) == RED
    assert image.getpixel((128, 1)) == RED


def test_the_reference_is_framed_in_an_inset_at_the_bottom_right() -> None:
    """Given the four-colour reference, when rendered at 512x512, then the inset box is framed in the frame colour
    and its four blocks show the reference's colours where the reference has them."""
    # when
    image = rgb(render_portrait("a knight", 7, 512, 512, reference_png()))
    # then the frame
    left, top, right, bottom = inset_box(512, 512)
    frame = inset_frame(512, 512)
    assert image.getpixel((left, top)) == INSET_FRAME_COLOR
    assert image.getpixel((right - 1, bottom - 1)) == INSET_FRAME_COLOR
    assert image.getpixel((left + frame // 2, (top + bottom) // 2)) == INSET_FRAME_COLOR
    # and the picture inside it, sampled at the middle of each block of the reference
    x0, y0 = left + frame, top + frame
    side = right - left - 2 * frame
    samples = {
        RED: (x0 + side // 4, y0 + side // 2),
        GREEN: (x0 + 3 * side // 4, y0 + side // 4),
        BLUE: (x0 + 5 * side // 8, y0 + 7 * side // 8),
        GOLD: (x0 + 7 * side // 8, y0 + 7 * side // 8),
    }
    for color, point in samples.items():
        assert close(image.getpixel(point), color), (color, point, image.getpixel(point))


def test_without_a_reference_nothing_changes_and_with_one_only_colours_and_the_inset_do() -> None:
    """Given the same prompt and seed, when rendered without and with a reference, then the one without is the
    renderer's usual picture (still byte-identical run to run), and the one with it differs from it."""
    # when
    plain = render_portrait("a knight", 7, 256, 256)
    again = render_portrait("a knight", 7, 256, 256)
    referenced = render_portrait("a knight", 7, 256, 256, reference_png())
    # then
    assert plain == again
    assert rgb(plain).getpixel((1, 1)) != RED
    assert referenced == render_portrait("a knight", 7, 256, 256, reference_png())
    left, top, _, _ = inset_box(256, 256)
    assert rgb(referenced).getpixel((left, top)) == INSET_FRAME_COLOR != rgb(plain).getpixel((left, top))


async def test_the_provider_takes_reference_bytes_and_refuses_what_it_cannot_read() -> None:
    """Given the local provider, when it is handed the reference as bytes it uses them; when handed a URL (only
    remote providers fetch) or bytes that are no image, then it fails without retry."""
    provider = LocalProvider()

    def request(reference: ImageReference) -> ImageRequest:
        return ImageRequest(
            model_key="local/portrait-v1", prompt="a knight", seed=7, quality=Quality.FAST, width=256, height=256,
            reference=reference,
        )

    # when
    result = await provider.generate(request(ImageReference(data=reference_png())), reporter=Reporter())
    # then
    assert result.image_bytes is not None and rgb(result.image_bytes).getpixel((1, 1)) == RED
    for bad in (ImageReference(url="https://example.com/ref.png"), ImageReference(data=b"not an image")):
        with pytest.raises(ProviderError) as refused:
            await provider.generate(request(bad), reporter=Reporter())
        assert refused.value.retryable is False


def test_a_reference_is_either_a_url_or_bytes() -> None:
    """Given the request's reference type, when built with both or neither, then it is refused."""
    with pytest.raises(ValueError, match="either"):
        ImageReference()
    with pytest.raises(ValueError, match="either"):
        ImageReference(url="https://example.com/r.png", data=b"x")
