"""Decoding untrusted inputs: modes, orientation, animation, limits and typed errors."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixguard import (
    DecodeLimits,
    EmptyImageError,
    ImageDecodeError,
    ImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    ImageUnreadableError,
    InvalidImageInputError,
    NotAnImageError,
    TooManyPixelsError,
    TruncatedImageError,
    UnsupportedFormatError,
)
from pixguard.images import load_image
from tests.helpers import encode, gradient_image

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _two_halves(width: int = 40, height: int = 20) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


@pytest.mark.parametrize(
    ("orientation", "size", "red_at"),
    [
        (1, (40, 20), (5, 10)),  # as stored: red on the left
        (3, (40, 20), (35, 10)),  # rotated 180: red on the right
        (6, (20, 40), (10, 5)),  # rotated 90 clockwise: red on top
        (8, (20, 40), (10, 35)),  # rotated 90 counter-clockwise: red at the bottom
    ],
)
def test_exif_orientation_is_applied(orientation, size, red_at):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(_two_halves(), "JPEG", exif=exif.tobytes(), quality=95)
    frame = load_image(data).frames[0]
    assert frame.size == size
    r, _g, b = frame.getpixel(red_at)
    assert r > 200 and b < 60


def test_corrupt_exif_does_not_fail_a_readable_image():
    data = encode(_two_halves(), "JPEG", exif=b"Exif\x00\x00garbage-not-tiff")
    assert load_image(data).frames[0].size == (40, 20)


def test_alpha_is_composited_on_the_background():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (0, 255, 0, 255))  # one opaque green pixel
    frame = load_image(encode(rgba, "PNG")).frames[0]
    assert frame.mode == "RGB"
    assert frame.getpixel((4, 4)) == (255, 255, 255)  # hidden red is not shown
    assert frame.getpixel((0, 0)) == (0, 255, 0)
    black = load_image(encode(rgba, "PNG"), limits=DecodeLimits(background=(0, 0, 0))).frames[0]
    assert black.getpixel((4, 4)) == (0, 0, 0)


def test_palette_transparency_and_la_are_composited():
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    data = encode(palette, "PNG", transparency=1)
    assert load_image(data).frames[0].getpixel((1, 1)) == (255, 255, 255)
    la = Image.new("LA", (4, 4), (0, 0))
    assert load_image(encode(la, "PNG")).frames[0].getpixel((1, 1)) == (255, 255, 255)


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    values = np.full((4, 4), 32768, dtype=np.uint16)  # mid grey in 16 bits
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    r, g, b = load_image(data).frames[0].getpixel((0, 0))
    assert r == g == b == 128


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    frame = load_image(encode(cmyk, "JPEG", quality=95)).frames[0]
    r, g, b = frame.getpixel((4, 4))
    assert frame.mode == "RGB" and r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB"])
def test_common_modes_become_rgb(mode):
    image = gradient_image(16, 16).convert(mode)
    frame = load_image(encode(image, "PNG")).frames[0]
    assert frame.mode == "RGB" and frame.size == (16, 16)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((5, 7), np.uint8),
        np.zeros((5, 7, 1), np.uint8),
        np.zeros((5, 7, 3), np.uint8),
        np.zeros((5, 7, 4), np.uint8),
        np.zeros((5, 7, 3), np.uint16),
        np.zeros((5, 7, 3), np.float32),
        np.zeros((5, 7), bool),
    ],
)
def test_arrays_of_supported_shapes(array):
    frame = load_image(array).frames[0]
    assert frame.size == (7, 5) and frame.mode == "RGB"


def test_float_and_uint16_arrays_are_scaled():
    assert load_image(np.full((2, 2, 3), 0.5, np.float32)).frames[0].getpixel((0, 0)) == (
        128,
        128,
        128,
    )
    assert load_image(np.full((2, 2, 3), 65535, np.uint16)).frames[0].getpixel((0, 0)) == (
        255,
        255,
        255,
    )


def _animation(fmt: str, frames: int, size: int = 16) -> bytes:
    images = [Image.new("RGB", (size, size), (i * 10 % 256, 0, 0)) for i in range(frames)]
    params = {"save_all": True, "append_images": images[1:], "duration": 40}
    if fmt == "PNG":
        params["default_image"] = False
    return encode(images[0], fmt, **params)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])  # PNG with save_all is APNG
def test_animations_are_sampled_within_bounds(fmt):
    decoded = load_image(_animation(fmt, 20), limits=DecodeLimits(max_frames=5))
    assert decoded.frame_count == 20
    assert len(decoded.frames) == 5
    assert decoded.frame_indices[0] == 0 and decoded.frame_indices[-1] == 19
    assert list(decoded.frame_indices) == sorted(set(decoded.frame_indices))
    # Frames really differ: the red channel encodes the frame number.
    reds = [frame.getpixel((8, 8))[0] for frame in decoded.frames]
    assert len(set(reds)) == 5


def test_animation_sampling_respects_the_pixel_budget():
    limits = DecodeLimits(max_frames=8, max_animation_pixels=16 * 16 * 4)
    decoded = load_image(_animation("GIF", 30), limits=limits)
    assert decoded.frame_count == 4  # frames within the budget; the rest are not scanned
    assert decoded.frame_indices == (0, 1, 2, 3)


def test_frame_scan_is_capped():
    decoded = load_image(_animation("GIF", 50), limits=DecodeLimits(max_frames_scanned=10))
    assert decoded.frame_count == 10
    assert max(decoded.frame_indices) == 9


def test_every_frame_is_checked_against_the_pixel_limit():
    # A tiny first page followed by a large one: the limit applies to each page.
    small, large = Image.new("RGB", (10, 10)), Image.new("RGB", (300, 200))
    data = encode(small, "TIFF", save_all=True, append_images=[large])
    with pytest.raises(TooManyPixelsError):
        load_image(data, limits=DecodeLimits(max_pixels=10_000))


def test_a_shared_animated_pil_image_is_left_as_found():
    image = Image.open(io.BytesIO(_animation("GIF", 12)))
    image.seek(5)
    decoded = load_image(image, limits=DecodeLimits(max_frames=4))
    assert len(decoded.frames) == 4
    assert image.tell() == 5


def test_large_jpegs_decode_with_dct_scaling_only_when_allowed():
    big = encode(gradient_image(3000, 2000), "JPEG", quality=90)
    scaled = load_image(big, min_size=(384, 384)).frames[0]
    assert scaled.size == (750, 500)  # 1/4 scale: both sides stay >= 384
    full = load_image(big, min_size=(384, 384), limits=DecodeLimits(dct_scaling=False)).frames[0]
    assert full.size == (3000, 2000)
    small = encode(gradient_image(1200, 900), "JPEG")
    assert load_image(small, min_size=(384, 384)).frames[0].size == (1200, 900)


def test_dct_scaling_respects_rotation():
    exif = Image.Exif()
    exif[0x0112] = 6
    big = encode(gradient_image(3000, 2000), "JPEG", exif=exif.tobytes())
    frame = load_image(big, min_size=(600, 900)).frames[0]
    assert frame.size[0] >= 600 and frame.size[1] >= 900
    assert frame.size[1] > frame.size[0]  # upright portrait


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR that claims a huge image, with a tiny body."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_pixel_limit_rejects_from_the_header():
    with pytest.raises(TooManyPixelsError, match="pixel") as info:
        load_image(_png_header_only(50_000, 50_000))
    with pytest.raises(TooManyPixelsError, match="pixel limit"):
        load_image(_png_header_only(12_000, 10_000))
    assert info.value.code == "image_too_many_pixels"
    limits = DecodeLimits(max_pixels=1000)
    with pytest.raises(TooManyPixelsError):
        load_image(encode(gradient_image(40, 40), "PNG"), limits=limits)
    with pytest.raises(TooManyPixelsError):
        load_image(np.zeros((40, 40, 3), np.uint8), limits=limits)


def test_byte_limit_applies_to_paths_bytes_and_streams(tmp_path: Path):
    data = encode(gradient_image(64, 64), "PNG")
    limits = DecodeLimits(max_bytes=len(data) - 1)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    for source in (path, data, io.BytesIO(data)):
        with pytest.raises(ImageTooLargeError):
            load_image(source, limits=limits)
    assert load_image(io.BytesIO(data), limits=DecodeLimits(max_bytes=len(data))).size == (64, 64)


class _ShortReads(io.RawIOBase):
    """An unbuffered stream that returns at most 1000 bytes per read, like a pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(size, 1000) if size and size > 0 else 1000)


def test_short_reads_are_read_to_the_end():
    data = encode(gradient_image(200, 200), "PNG")
    assert len(data) > 5000
    assert load_image(_ShortReads(data)).size == (200, 200)


def test_hostile_decoder_exceptions_become_typed_errors(monkeypatch):
    from PIL import PngImagePlugin

    def explode(self):
        raise TypeError("Missing dimensions")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", explode)
    with pytest.raises(ImageDecodeError, match="TypeError"):
        load_image(encode(gradient_image(8, 8), "PNG"))


def _malformed_corpus(tmp_path: Path) -> dict[str, tuple[object, type[ImageError], str]]:
    jpeg = encode(gradient_image(64, 64), "JPEG")
    png = encode(gradient_image(64, 64), "PNG")
    eps = encode(gradient_image(8, 8), "EPS")
    text = tmp_path / "notes.txt"
    text.write_text("hello, not an image")
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    return {
        "zero bytes": (b"", EmptyImageError, "image_empty"),
        "empty file": (_write(tmp_path / "empty.jpg", b""), EmptyImageError, "image_empty"),
        "truncated jpeg": (jpeg[: len(jpeg) // 2], TruncatedImageError, "image_truncated"),
        "truncated png": (png[: len(png) // 2], TruncatedImageError, "image_truncated"),
        "random bytes": (bytes(range(256)) * 4, NotAnImageError, "image_not_an_image"),
        "text file": (text, NotAnImageError, "image_not_an_image"),
        "svg": (
            b'<svg xmlns="http://www.w3.org/2000/svg"/>',
            UnsupportedFormatError,
            "image_unsupported_format",
        ),
        "pdf": (b"%PDF-1.7\n%...", UnsupportedFormatError, "image_unsupported_format"),
        "eps": (eps, UnsupportedFormatError, "image_unsupported_format"),
        "missing path": (tmp_path / "nope.png", ImageNotFoundError, "image_not_found"),
        "directory": (folder, ImageUnreadableError, "image_unreadable"),
        "corrupt jpeg body": (jpeg[:200] + b"\xff" * 50 + jpeg[250:], ImageError, ""),
        "bad array shape": (
            np.zeros((4, 4, 2), np.uint8),
            InvalidImageInputError,
            "image_invalid_input",
        ),
        "bad array dtype": (
            np.zeros((4, 4), np.complex64),
            InvalidImageInputError,
            "image_invalid_input",
        ),
        "nan array": (
            np.full((4, 4), np.nan, np.float32),
            InvalidImageInputError,
            "image_invalid_input",
        ),
        "empty array": (np.zeros((0, 4, 3), np.uint8), EmptyImageError, "image_empty"),
        "wrong type": (42, InvalidImageInputError, "image_invalid_input"),
        "nul in path": ("bad\0name.jpg", InvalidImageInputError, "image_invalid_input"),
        "text stream": (io.StringIO("abc"), InvalidImageInputError, "image_invalid_input"),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_malformed_corpus_gets_typed_errors(tmp_path: Path):
    for label, (source, error_type, code) in _malformed_corpus(tmp_path).items():
        with pytest.raises(error_type) as info:
            load_image(source)  # type: ignore[arg-type]
        error = info.value
        if code:
            assert error.code == code, label
        assert error.code.startswith("image_"), label
        assert error.message, label
        assert error.to_dict()["code"] == error.code


def test_corrupt_image_data_is_a_decode_error():
    png = bytearray(encode(gradient_image(64, 64), "PNG"))
    idat = png.index(b"IDAT")
    png[idat + 4 : idat + 12] = b"\xde\xad\xbe\xef\x01\x02\x03\x04"  # not a zlib stream
    with pytest.raises(ImageDecodeError, match="corrupt"):
        load_image(bytes(png))


def test_errors_name_the_input(tmp_path: Path):
    missing = tmp_path / "gone.jpg"
    with pytest.raises(ImageNotFoundError) as info:
        load_image(missing)
    assert str(missing) in str(info.value)


def test_unsupported_formats_are_named_without_running_their_parsers(monkeypatch):
    """The allow-list holds: only the supported formats' parsers ever see the bytes,
    even for data none of them recognises."""
    from PIL import Image as PILImage

    from pixguard.images import SUPPORTED_FORMATS

    opened = []
    original_open = PILImage.open

    def spy(fp, mode="r", formats=None):
        opened.append(formats)
        return original_open(fp, mode, formats)

    monkeypatch.setattr(PILImage, "open", spy)
    samples = {
        "EPS": encode(gradient_image(8, 8), "EPS"),
        "ICO": encode(gradient_image(16, 16), "ICO"),
        "PSD": b"8BPS\x00\x01" + bytes(40),
        "Netpbm": encode(gradient_image(8, 8), "PPM"),
        "HEIF": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
        "JPEG 2000": b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(32),
    }
    for fmt, data in samples.items():
        with pytest.raises(UnsupportedFormatError, match=fmt):
            load_image(data)
    with pytest.raises(NotAnImageError):
        load_image(b"TGA has no signature" + bytes(64))
    assert opened, "Image.open was not reached"
    assert all(formats is not None and set(formats) <= set(SUPPORTED_FORMATS) for formats in opened)


def test_importing_pixguard_installs_no_warnings_filter():
    import subprocess
    import sys

    code = (
        "import warnings, numpy, PIL.Image; before = list(warnings.filters); "
        "import pixguard, pixguard.images, pixguard.classify; "
        "assert warnings.filters == before, warnings.filters[:3]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_exif_orientation_of_tiff_and_png_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    for fmt in ("PNG", "TIFF", "WEBP"):
        data = encode(_two_halves(), fmt, exif=exif.tobytes())
        frame = load_image(data).frames[0]
        assert frame.size == _two_halves().size[::-1], fmt
