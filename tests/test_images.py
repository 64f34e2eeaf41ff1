"""Image checks and thumbnails: what is accepted, what is refused, what comes out."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from pipeline.images import InvalidImage, inspect_image, make_thumbnail

LIMITS = {"max_bytes": 10_000_000, "max_pixels": 4096 * 4096}


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def with_png_size(png: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR claims another size (with a valid CRC): a bomb costs a few bytes to make."""
    assert png[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + png[24:29]
    return png[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + png[33:]


@pytest.mark.parametrize(
    ("fmt", "mime_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_inspect_accepts_png_jpeg_and_webp(fmt: str, mime_type: str) -> None:
    # given an image of each accepted format
    data = encode(Image.new("RGB", (320, 200), (200, 30, 90)), fmt)

    # when it is inspected
    facts = inspect_image(data, **LIMITS)

    # then its size, type and byte count are read from the header
    assert (facts.width, facts.height, facts.mime_type, facts.size_bytes) == (320, 200, mime_type, len(data))


def test_inspect_reports_the_upright_size_of_a_rotated_jpeg() -> None:
    # given a 400x200 JPEG whose EXIF says "rotate 90 degrees to show it"
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.new("RGB", (400, 200)), "JPEG", exif=exif)

    # when it is inspected
    facts = inspect_image(data, **LIMITS)

    # then the size is the one a viewer shows
    assert (facts.width, facts.height) == (200, 400)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"hello, this is plain text", "not an image"),
        (encode(Image.new("P", (10, 10)), "GIF"), "GIF images are not accepted"),
    ],
)
def test_inspect_refuses_what_is_not_an_accepted_image(data: bytes, reason: str) -> None:
    # given bytes that are empty, not an image, or a GIF
    # when they are inspected, then they are refused with a readable reason
    with pytest.raises(InvalidImage, match=reason):
        inspect_image(data, **LIMITS)


def test_inspect_refuses_more_bytes_than_allowed() -> None:
    # given a valid PNG one byte over the limit
    data = encode(Image.new("RGB", (64, 64)), "PNG")

    # when it is inspected with max_bytes just below its size, then it is refused
    with pytest.raises(InvalidImage, match="bytes"):
        inspect_image(data, max_bytes=len(data) - 1, max_pixels=10**6)

    # and at exactly the limit it is accepted
    assert inspect_image(data, max_bytes=len(data), max_pixels=10**6).size_bytes == len(data)


@pytest.mark.parametrize(
    ("width", "height", "max_pixels"),
    [
        (5_000, 5_000, 4096 * 4096),  # over our own limit only
        (10_000, 10_000, 10**9),  # where Pillow only warns: the warning must refuse too
        (100_000, 100_000, 10**11),  # where Pillow raises its own bomb error
    ],
)
def test_inspect_refuses_pixel_bombs_from_the_header_alone(width: int, height: int, max_pixels: int) -> None:
    # given a tiny PNG whose header claims a huge size
    bomb = with_png_size(encode(Image.new("1", (8, 8)), "PNG"), width, height)
    assert len(bomb) < 200

    # when it is inspected, then it is refused for its pixel count
    with pytest.raises(InvalidImage, match="pixels"):
        inspect_image(bomb, max_bytes=10**6, max_pixels=max_pixels)


def test_inspect_refuses_a_damaged_png() -> None:
    # given a PNG whose pixel data was altered after its checksum was written
    data = bytearray(encode(Image.new("RGB", (64, 64), (10, 20, 30)), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF

    # when it is inspected, then it is refused as damaged
    with pytest.raises(InvalidImage, match="damaged"):
        inspect_image(bytes(data), **LIMITS)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1024, 1024), (256, 256)),
        ((1000, 500), (256, 128)),
        ((500, 1000), (128, 256)),
        ((100, 50), (100, 50)),  # never upscaled
    ],
)
def test_thumbnail_fits_the_longest_side_and_keeps_the_aspect(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    # given a PNG of some size
    data = encode(Image.new("RGB", size, (30, 120, 200)), "PNG")

    # when it is thumbnailed
    thumb = make_thumbnail(data)

    # then the WEBP has the longest side at most 256, with the same aspect ratio
    with Image.open(io.BytesIO(thumb.data)) as image:
        assert image.format == "WEBP"
        assert image.size == expected == (thumb.width, thumb.height)


def test_thumbnail_of_a_large_jpeg_is_upright_and_small() -> None:
    # given a 2000x1000 JPEG photo to be shown rotated by 90 degrees
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.new("RGB", (2000, 1000), (240, 200, 10)), "JPEG", exif=exif)

    # when it is thumbnailed
    thumb = make_thumbnail(data, max_side=200)

    # then it is upright (tall) with the longest side 200
    assert (thumb.width, thumb.height) == (100, 200)
    with Image.open(io.BytesIO(thumb.data)) as image:
        assert image.size == (100, 200)
        pixel = image.convert("RGB").getpixel((50, 100))
        assert isinstance(pixel, tuple)
        red, green, blue = pixel
        assert red > 200 and green > 160 and blue < 60


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_thumbnail_keeps_transparency(mode: str) -> None:
    # given a 512x512 image, transparent on the left half, opaque on the right
    rgba = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
    rgba.paste((220, 40, 40, 255), (256, 0, 512, 512))
    source = rgba.convert(mode) if mode != "P" else rgba.convert("P", palette=Image.Palette.ADAPTIVE)
    if mode == "P":
        source.info["transparency"] = source.getpixel((0, 0))
    data = encode(source, "PNG")

    # when it is thumbnailed
    thumb = make_thumbnail(data)

    # then the WEBP has an alpha channel: clear on the left, opaque on the right
    with Image.open(io.BytesIO(thumb.data)) as image:
        assert image.mode == "RGBA"
        left, right = image.getpixel((10, 128)), image.getpixel((246, 128))
        assert isinstance(left, tuple) and isinstance(right, tuple)
        assert left[3] == 0
        assert right[3] == 255


def test_thumbnail_of_an_opaque_image_has_no_alpha() -> None:
    # given an opaque greyscale PNG
    data = encode(Image.new("L", (300, 300), 128), "PNG")

    # when it is thumbnailed, then the WEBP is plain RGB
    with Image.open(io.BytesIO(make_thumbnail(data).data)) as image:
        assert image.mode == "RGB"


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_thumbnail_refuses_undecodable_data(how: str) -> None:
    # given text, or a PNG cut in the middle of its pixel data
    noisy = Image.effect_noise((256, 256), 64).convert("RGB")
    png = encode(noisy, "PNG")
    data = b"not an image at all" if how == "garbage" else png[: len(png) // 2]

    # when it is thumbnailed, then it is refused
    with pytest.raises(InvalidImage):
        make_thumbnail(data)
