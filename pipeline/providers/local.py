"""A provider that draws portraits itself: no network, no key, no cost.

It lets the whole pipeline run (development, tests, the benchmark) with real
PNG bytes. Pictures are flat-shaded cartoons whose colours and shapes follow
from a hash of prompt and seed, so a seed replays its picture exactly.

Given a reference image it visibly uses it, so consistency can be checked
offline, pixel by pixel: the background, hair and clothes take the
reference's dominant colours (most common first), and the reference itself
is framed in an inset at the bottom right (``inset_box``).
"""

from __future__ import annotations

import asyncio
import colorsys
import hashlib
import io
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from pipeline.providers.interface import (
    ImageRequest,
    ProgressReporter,
    ProviderError,
    ProviderProgress,
    ProviderResult,
)

# Seeds are stored and sent to providers as signed 32-bit integers.
MAX_SEED = 2**31 - 1
MAX_SIDE = 4096

# Flat shapes in a palette image: about 2.5 ms to draw and encode 1024x1024,
# and a PNG under 20 kB, so the local provider never slows the pipeline down.
_BANDS = 16

_SKIN_TONES = (
    (255, 224, 196), (241, 194, 158), (224, 172, 128), (198, 134, 90),
    (160, 102, 64), (112, 70, 44), (84, 52, 34), (178, 214, 236), (170, 212, 160),
)

RGB = tuple[int, int, int]

# The reference is read at most this large, then reduced to this many dominant colours.
_REFERENCE_SIDE = 256
PALETTE_COLORS = 4
INSET_FRAME_COLOR: RGB = (255, 255, 255)


class LocalProvider:
    """Renders on this machine; ``latency_seconds`` stands in for a remote provider's wait."""

    name = "local"

    def __init__(self, *, latency_seconds: float = 0.0) -> None:
        if latency_seconds < 0:
            raise ValueError("latency_seconds cannot be negative")
        self._latency_seconds = latency_seconds

    async def generate(
        self, request: ImageRequest, *, reporter: ProgressReporter, request_id: str | None = None
    ) -> ProviderResult:
        """Draw the portrait in a thread so the event loop keeps serving other jobs."""
        if not (1 <= request.width <= MAX_SIDE and 1 <= request.height <= MAX_SIDE):
            raise ProviderError(
                f"{request.width}x{request.height} is outside 1..{MAX_SIDE} pixels a side", retryable=False
            )
        seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
        await reporter.progress(ProviderProgress("IN_PROGRESS"))
        if self._latency_seconds:
            await asyncio.sleep(self._latency_seconds)
        reference = None if request.reference is None else request.reference.data
        if request.reference is not None and reference is None:
            raise ProviderError("the local renderer takes a reference image as bytes, not a URL", retryable=False)
        try:
            extra = () if reference is None else (reference,)
            png = await asyncio.to_thread(
                render_portrait, request.prompt, seed, request.width, request.height, *extra
            )
        except InvalidReference as error:
            raise ProviderError(str(error), retryable=False) from error
        return ProviderResult(seed=seed, image_bytes=png, content_type="image/png")

    async def cancel(self, *, model_key: str, request_id: str) -> None:
        """Nothing was submitted anywhere, so there is nothing to stop."""

    async def close(self) -> None:
        """No connections to release."""


class InvalidReference(ValueError):
    """The reference image's bytes are not an image Pillow can read."""


def render_portrait(
    prompt: str, seed: int, width: int = 1024, height: int = 1024, reference: bytes | None = None
) -> bytes:
    """The PNG for (prompt, seed, size[, reference]): byte-identical every time, for replays and caches."""
    digest = hashlib.blake2b(f"{seed}\x00{prompt}".encode(), digest_size=32, person=b"portraits-local").digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    if reference is None:
        image = _draw(rng, width, height)
    else:
        picture = _open_reference(reference)
        image = _draw(rng, width, height, reference_palette(picture)).convert("RGB")
        _paste_inset(image, picture)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


@dataclass(slots=True)
class _Palette:
    """Colours of a palette ("P") image: one byte a pixel is what makes encoding cheap."""

    colors: list[RGB] = field(default_factory=list)

    def ink(self, color: RGB) -> int:
        self.colors.append(color)
        return len(self.colors) - 1

    def flat(self) -> list[int]:
        return [channel for color in self.colors for channel in color]


def _hsv(hue: float, saturation: float, value: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)


def _shade(color: RGB, factor: float) -> RGB:
    """Darker: ``factor`` of the way from black to ``color``."""
    return _mix((0, 0, 0), color, factor)


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    """The colour a fraction ``t`` of the way from ``a`` to ``b``."""
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t), round(a[2] + (b[2] - a[2]) * t))


def _open_reference(data: bytes) -> Image.Image:
    """The reference as RGB, at most _REFERENCE_SIDE a side (our own stored image, bounded when it was stored)."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.draft("RGB", (_REFERENCE_SIDE, _REFERENCE_SIDE))  # JPEG: decode at a reduced scale
            picture = opened.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise InvalidReference(f"the reference image is not a usable image: {error}") from error
    picture.thumbnail((_REFERENCE_SIDE, _REFERENCE_SIDE), Image.Resampling.BILINEAR)
    return picture


def reference_palette(picture: Image.Image, colors: int = PALETTE_COLORS) -> list[RGB]:
    """The reference's dominant colours, most common first (median cut, so a flat colour comes back exact)."""
    small = picture.resize((64, 64), Image.Resampling.NEAREST)  # enough pixels for four colours, 16x fewer
    quantized = small.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    flat = quantized.getpalette() or []
    counts = sorted(quantized.getcolors() or [], key=lambda entry: (-entry[0], entry[1]))
    colours: list[RGB] = []
    for _, index in counts:
        assert isinstance(index, int)  # a palette image's colours are palette indexes
        colours.append((flat[index * 3], flat[index * 3 + 1], flat[index * 3 + 2]))
    return colours


def inset_box(width: int, height: int) -> tuple[int, int, int, int]:
    """Where the framed reference goes (left, top, right, bottom), frame included: a quarter of the short side,
    at the bottom right."""
    unit = min(width, height)
    side = max(8, unit // 4)
    margin = unit // 32
    return width - margin - side, height - margin - side, width - margin, height - margin


def inset_frame(width: int, height: int) -> int:
    """The frame's thickness, in pixels, inside ``inset_box``."""
    return max(2, min(width, height) // 128)


def _paste_inset(image: Image.Image, picture: Image.Image) -> None:
    left, top, right, bottom = inset_box(image.width, image.height)
    frame = inset_frame(image.width, image.height)
    ImageDraw.Draw(image).rectangle((left, top, right - 1, bottom - 1), fill=INSET_FRAME_COLOR)
    inner = (right - left - 2 * frame, bottom - top - 2 * frame)
    image.paste(ImageOps.fit(picture, inner, method=Image.Resampling.BILINEAR), (left + frame, top + frame))


def _draw(rng: random.Random, width: int, height: int, colors: Sequence[RGB] = ()) -> Image.Image:
    """The cartoon; with ``colors`` (a reference's, most common first) its background, hair and clothes take them.

    The same random draws happen either way, so a reference changes colours, never shapes."""
    palette = _Palette()
    image = Image.new("P", (width, height), 0)
    draw = ImageDraw.Draw(image)
    unit = min(width, height)
    cx = width / 2
    top = (height - unit) / 2 if height > unit else 0.0

    # Background: bands from one hue to a neighbouring one, maybe a halo behind the head.
    hue = rng.random()
    sky_top = _hsv(hue, rng.uniform(0.25, 0.7), rng.uniform(0.55, 0.95))
    sky_bottom = _hsv(hue + rng.uniform(-0.25, 0.25), rng.uniform(0.3, 0.8), rng.uniform(0.2, 0.6))
    if colors:
        sky_top, sky_bottom = colors[0], colors[1 % len(colors)]
    for band in range(_BANDS):
        y0, y1 = height * band // _BANDS, height * (band + 1) // _BANDS
        draw.rectangle((0, y0, width, y1), fill=palette.ink(_mix(sky_top, sky_bottom, band / (_BANDS - 1))))

    head_y = top + unit * rng.uniform(0.38, 0.44)
    rx = unit * rng.uniform(0.12, 0.15)
    ry = rx * rng.uniform(1.15, 1.32)
    if rng.random() < 0.6:
        halo = unit * rng.uniform(0.25, 0.34)
        glow = _mix(sky_top, (255, 255, 255), rng.uniform(0.25, 0.55))
        draw.ellipse((cx - halo, head_y - halo, cx + halo, head_y + halo), fill=palette.ink(glow))

    skin = rng.choice(_SKIN_TONES)
    skin_shadow = palette.ink(_shade(skin, 0.82))
    skin_ink = palette.ink(skin)
    hair = _hsv(rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.15, 0.95))
    if colors:
        hair = colors[2 % len(colors)]
    hair_ink = palette.ink(hair)
    cloth = _hsv(rng.random(), rng.uniform(0.35, 0.9), rng.uniform(0.3, 0.85))
    if colors:
        cloth = colors[3 % len(colors)]
    accent = palette.ink(_hsv(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0)))
    long_hair = rng.random() < 0.5

    # Long hair falls behind the shoulders, so it is drawn first.
    if long_hair:
        length = unit * rng.uniform(0.3, 0.5)
        draw.rounded_rectangle(
            (cx - rx * 1.3, head_y - ry * 0.9, cx + rx * 1.3, head_y + length), radius=rx * 0.6, fill=hair_ink
        )

    # Shoulders and chest: an ellipse continued by a block down to the bottom edge.
    shoulder_y = head_y + ry * 0.8 + unit * rng.uniform(0.04, 0.07)
    half = unit * rng.uniform(0.3, 0.4)
    cloth_ink = palette.ink(cloth)
    draw.ellipse((cx - half, shoulder_y, cx + half, shoulder_y + unit * 0.5), fill=cloth_ink)
    if shoulder_y + unit * 0.25 < height:
        draw.rectangle((cx - half, shoulder_y + unit * 0.25, cx + half, height), fill=cloth_ink)
    neck = rx * rng.uniform(0.38, 0.5)
    draw.rectangle((cx - neck, head_y + ry * 0.6, cx + neck, shoulder_y + unit * 0.03), fill=skin_shadow)
    collar = unit * rng.uniform(0.05, 0.09)
    draw.polygon(
        [(cx - collar, shoulder_y + 1), (cx + collar, shoulder_y + 1), (cx, shoulder_y + collar * 1.6)],
        fill=palette.ink(_shade(cloth, 0.65)) if rng.random() < 0.5 else skin_shadow,
    )

    # Ears, head, hair on top.
    ear = rx * 0.22
    for side in (-1, 1):
        ex = cx + side * rx
        draw.ellipse((ex - ear, head_y - ear * 1.2, ex + ear, head_y + ear * 1.2), fill=skin_shadow)
    draw.ellipse((cx - rx, head_y - ry, cx + rx, head_y + ry), fill=skin_ink)
    draw.chord(
        (cx - rx * 1.08, head_y - ry * 1.12, cx + rx * 1.08, head_y + ry * rng.uniform(0.2, 0.5)),
        start=180, end=360, fill=hair_ink,
    )
    if rng.random() < 0.3:
        bun = rx * 0.45
        draw.ellipse((cx - bun, head_y - ry - bun * 1.5, cx + bun, head_y - ry + bun * 0.3), fill=hair_ink)

    # Face: eyes, brows, nose, mouth, maybe blush and earrings.
    eye_y = head_y + ry * rng.uniform(0.02, 0.14)
    eye_dx = rx * rng.uniform(0.36, 0.46)
    eye_w, eye_h = rx * rng.uniform(0.18, 0.24), rx * rng.uniform(0.11, 0.16)
    white = palette.ink((250, 248, 240))
    iris = palette.ink(_hsv(rng.random(), rng.uniform(0.4, 1.0), rng.uniform(0.35, 0.8)))
    dark = palette.ink((20, 16, 24))
    brow = palette.ink(_shade(hair, 0.7))
    brow_tilt = rng.uniform(-0.08, 0.08) * rx
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse((ex - eye_w, eye_y - eye_h, ex + eye_w, eye_y + eye_h), fill=white)
        r = eye_h * 0.95
        draw.ellipse((ex - r, eye_y - r, ex + r, eye_y + r), fill=iris)
        draw.ellipse((ex - r * 0.45, eye_y - r * 0.45, ex + r * 0.45, eye_y + r * 0.45), fill=dark)
        by = eye_y - eye_h * 2.2
        draw.line(
            (ex - eye_w, by + side * brow_tilt, ex + eye_w, by - side * brow_tilt),
            fill=brow, width=max(1, round(rx * 0.07)),
        )
        if rng.random() < 0.4:
            cheek = rx * 0.14
            cy = eye_y + ry * 0.35
            draw.ellipse(
                (ex - cheek * 1.3, cy - cheek, ex + cheek * 1.3, cy + cheek),
                fill=palette.ink(_mix(skin, (235, 110, 120), 0.35)),
            )
    nose_y = eye_y + ry * 0.3
    draw.line((cx, eye_y + eye_h, cx + rx * 0.06, nose_y), fill=skin_shadow, width=max(1, round(rx * 0.06)))
    mouth_y = head_y + ry * rng.uniform(0.5, 0.62)
    mouth_w = rx * rng.uniform(0.2, 0.34)
    lips = palette.ink(_mix(skin, (170, 40, 60), rng.uniform(0.35, 0.7)))
    draw.chord((cx - mouth_w, mouth_y - mouth_w * 0.5, cx + mouth_w, mouth_y + mouth_w * 0.5), 0, 180, fill=lips)
    if rng.random() < 0.35:
        ring = rx * 0.09
        for side in (-1, 1):
            ex, ey = cx + side * rx, head_y + ear * 1.6
            draw.ellipse((ex - ring, ey - ring, ex + ring, ey + ring), fill=accent)

    image.putpalette(palette.flat())
    return image
