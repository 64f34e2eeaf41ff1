"""Image checks and thumbnails: bytes in, bytes or facts out.

Everything here is synchronous CPU work; callers run it in a thread. Images
come from providers and uploads we do not trust, so nothing is decoded before
its header has been read and its size checked.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg", "WEBP": "image/webp"}

# Pillow's decoders fail with any of these on damaged or hostile input.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)

_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transposition that shows the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = frozenset({5, 6, 7, 8})

# Resize in two steps: an integer box reduce (an exact area average), then a
# small bicubic step for the remainder. Four times faster than Pillow's default
# gap of 2.0 and indistinguishable at thumbnail sizes.
_REDUCING_GAP = 1.0
# JPEG decodes at 1/2, 1/4 or 1/8 scale for free; keep twice the target so the
# reduce above still has real pixels to average.
_JPEG_DRAFT_GAP = 2


class InvalidImage(ValueError):
    """The bytes are not an image we accept; the message says why, for the client."""


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """Width and height as displayed (EXIF orientation applied)."""

    width: int
    height: int
    mime_type: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Thumbnail:
    data: bytes  # WEBP
    width: int
    height: int


def inspect_image(data: bytes, *, max_bytes: int, max_pixels: int) -> ImageFacts:
    """Check an image from its header alone, so a hostile file costs nothing to refuse."""
    if not data:
        raise InvalidImage("the image is empty")
    if len(data) > max_bytes:
        raise InvalidImage(f"the image is {len(data)} bytes, more than the {max_bytes} allowed")
    with _opened(data) as image:
        mime_type = MIME_TYPES.get(image.format or "")
        if mime_type is None:
            raise InvalidImage(f"{image.format} images are not accepted; send PNG, JPEG or WEBP")
        width, height = image.size
        if width * height > max_pixels:
            raise InvalidImage(f"the image is {width}x{height} pixels, more than the {max_pixels} allowed")
        orientation = _orientation(image)
        try:
            # Checks PNG chunk checksums without inflating the pixels; a no-op for JPEG and WEBP.
            image.verify()
        except _DECODE_ERRORS as error:
            raise InvalidImage(f"the image is damaged: {error}") from error
    if orientation in _SWAPS_SIDES:
        width, height = height, width
    return ImageFacts(width=width, height=height, mime_type=mime_type, size_bytes=len(data))


def make_thumbnail(data: bytes, *, max_side: int = 256, quality: int = 80) -> Thumbnail:
    """A small upright WEBP for lists; never larger than the original, alpha kept."""
    if max_side < 1:
        raise ValueError("max_side must be positive")
    with _opened(data) as image:
        orientation = _orientation(image)
        try:
            if image.format in ("JPEG", "MPO"):
                side = max_side * _JPEG_DRAFT_GAP
                image.draft(None, (side, side))
            small = _thumbnail(image, max_side)
            if orientation in _UPRIGHT:
                small = small.transpose(_UPRIGHT[orientation])
            out = io.BytesIO()
            # method=2 encodes several times faster than the default 4 at a barely larger size.
            small.save(out, format="WEBP", quality=quality, method=2)
        except _DECODE_ERRORS as error:
            # Pixels are decoded lazily: as late as the save when no resize was needed.
            raise InvalidImage(f"the image cannot be decoded: {error}") from error
        return Thumbnail(data=out.getvalue(), width=small.width, height=small.height)


def _thumbnail(image: Image.Image, max_side: int) -> Image.Image:
    """Resize in a mode that resamples well (palette and bilevel images only do nearest)."""
    keeps_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    target = "RGBA" if keeps_alpha else "RGB"
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert(target)
    image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC, reducing_gap=_REDUCING_GAP)
    return image if image.mode == target else image.convert(target)


def _orientation(image: Image.Image) -> int:
    if image.format == "PNG" and "exif" not in image.info:
        return 1  # Pillow would decode the whole PNG looking for an eXIf chunk after the pixels
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except _DECODE_ERRORS:
        return 1  # a broken EXIF block is no reason to refuse the pixels
    return value if isinstance(value, int) else 1


def _opened(data: bytes) -> Image.Image:
    """Open without decoding; Pillow's bomb warning becomes an error like its bomb error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InvalidImage(f"the image has too many pixels: {error}") from error
    except UnidentifiedImageError as error:
        raise InvalidImage("the data is not an image") from error
    except _DECODE_ERRORS as error:
        raise InvalidImage(f"the image cannot be read: {error}") from error
