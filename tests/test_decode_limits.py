"""Decoding hostile inputs: huge animations, special files, Pillow's own bomb guard."""

from __future__ import annotations

import io
import os
import struct
import time
import zlib

import pytest
from PIL import Image

from pixguard._exceptions import ImageUnreadableError, NotAnImageError, TooManyPixelsError
from pixguard.images import DecodeLimits, load_image


def _big_gif(side: int, frames: int) -> bytes:
    """A small file with a huge canvas: solid frames compress to almost nothing."""
    images = [Image.new("P", (side, side), i) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=50)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def big_gif() -> bytes:
    return _big_gif(4000, 10)  # 16 MP per frame


def test_animation_frames_are_reduced_as_they_are_read(big_gif):
    decoded = load_image(big_gif, min_size=(224, 224))
    assert decoded.size == (4000, 4000)
    assert len(decoded.frames) > 1
    for frame in decoded.frames:
        assert 224 <= min(frame.size) < 2 * 224  # never kept at 4000 x 4000


def test_animation_without_a_model_size_keeps_full_frames():
    decoded = load_image(_big_gif(300, 3))
    assert {frame.size for frame in decoded.frames} == {(300, 300)}


def test_the_per_file_pixel_budget_bounds_an_animation(big_gif):
    limits = DecodeLimits(max_pixels=20_000_000, max_animation_pixels=40_000_000)
    started = time.perf_counter()
    decoded = load_image(big_gif, limits=limits, min_size=(224, 224))
    assert decoded.frame_count == 2  # 2 x 16 MP within 40 MP; the third would pass it
    assert time.perf_counter() - started < 20


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_a_huge_png_quotes_the_configured_limit_not_pillows():
    with pytest.raises(TooManyPixelsError) as caught:
        load_image(_png_header_only(30000, 30000), limits=DecodeLimits(max_pixels=1_000_000))
    message = str(caught.value)
    assert "1,000,000-pixel limit" in message
    assert "900,000,000 pixels" in message
    assert "decompression bomb" not in message.lower()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_proc_files_are_not_called_empty():
    with pytest.raises(NotAnImageError):
        load_image("/proc/self/status")


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    started = time.perf_counter()
    with pytest.raises(ImageUnreadableError, match="not a regular file"):
        load_image(fifo)
    assert time.perf_counter() - started < 5
