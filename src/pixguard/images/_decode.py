"""Turn untrusted image inputs into RGB frames, within limits, with typed errors."""

from __future__ import annotations

import io
import os
import re
import struct
import threading
from dataclasses import dataclass
from typing import IO, TypeAlias

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .._exceptions import (
    ImageDecodeError,
    ImageError,
    NotAnImageError,
    TooManyPixelsError,
    TruncatedImageError,
    UnsupportedFormatError,
)
from ._array import array_to_pil
from ._convert import to_rgb
from ._limits import DecodeLimits
from ._read import read_bytes

__all__ = ["SUPPORTED_FORMATS", "DecodedImage", "ImageInput", "describe_source", "load_image"]

ImageInput: TypeAlias = (
    str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | Image.Image | np.ndarray
)

#: Formats pixguard decodes. The list is short on purpose: every parser enabled is
#: attack surface, and formats such as EPS would run Ghostscript.
#: Multi-picture JPEGs from cameras (MPO) open through the JPEG parser.
SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF")

_JPEG_FORMATS = frozenset({"JPEG", "MPO"})

# Signatures of formats outside the allow-list, so users get "unsupported" rather
# than "not an image". Matched on the leading bytes only: no other parser ever
# sees the data, which is the point of the allow-list.
_UNSUPPORTED_SIGNATURES = (
    (b"<svg", "SVG"),
    (b"<?xml", "SVG/XML"),
    (b"%PDF", "PDF"),
    (b"%!PS", "EPS/PostScript"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"8BPS", "PSD"),
    (b"gimp xcf", "XCF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"icns", "ICNS"),
    (b"DDS ", "DDS"),
    (b"qoif", "QOI"),
    (b"\xffO\xffQ", "JPEG 2000"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"\xd7\xcd\xc6\x9a", "WMF"),
)
# Netpbm (PBM/PGM/PPM/PAM): "P1".."P7", then whitespace.
_NETPBM = re.compile(rb"P[1-7]\s")
# ISO-BMFF brands (bytes 8..12, after "ftyp") of HEIF images, which Pillow lacks.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"})


@dataclass(frozen=True)
class DecodedImage:
    """Frames ready for preprocessing.

    ``frames`` are 8-bit RGB, upright (EXIF orientation applied) and alpha-free.
    For a still image there is one frame; for an animation, an even sample of at
    most ``DecodeLimits.max_frames`` frames whose indices are in ``frame_indices``.
    Given a ``min_size``, animation frames are shrunk as they are read (by a whole
    factor, both sides staying at least that large), so no full-size canvas is kept.
    """

    frames: tuple[Image.Image, ...]
    frame_indices: tuple[int, ...]
    frame_count: int
    format: str | None
    size: tuple[int, int]
    """(width, height) of the stored image, before any DCT scaling."""


def describe_source(source: object) -> str:
    """A short human name for an input, used in errors and results."""
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    if isinstance(source, bytes | bytearray | memoryview):
        return "<bytes>"
    if isinstance(source, Image.Image):
        return "<PIL.Image>"
    if isinstance(source, np.ndarray):
        return "<ndarray>"
    name = getattr(source, "name", None)
    if isinstance(name, str):
        return name
    return f"<{type(source).__name__}>"


def load_image(
    source: ImageInput,
    *,
    limits: DecodeLimits | None = None,
    min_size: tuple[int, int] | None = None,
) -> DecodedImage:
    """Decode ``source`` into upright RGB frames.

    Args:
        source: a path, bytes, a binary file object, a PIL image or a numpy array
            (H x W, H x W x 1/3/4; uint8, uint16, bool, or floats in 0..1).
        limits: byte, pixel and frame limits; the defaults when omitted.
        min_size: (width, height) the consumer needs. Large JPEGs may be decoded at a
            reduced DCT scale as long as both sides stay at least this large.

    Raises:
        ImageError: a subclass naming exactly what is wrong with this input.
    """
    limits = limits or DecodeLimits()
    name = describe_source(source)
    try:
        if isinstance(source, Image.Image):
            return _from_caller_pil(source, name, limits)
        if isinstance(source, np.ndarray):
            return _from_array(source, name, limits)
        data = read_bytes(source, name, limits)
        return _from_bytes(data, name, limits, min_size)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow's own guard fired before pixguard's header check: quote the
        # configured limit, not Pillow's.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "the image"
        raise TooManyPixelsError(
            f"{size} exceeds the {limits.max_pixels:,}-pixel limit", source=name
        ) from exc
    except MemoryError as exc:
        raise TooManyPixelsError("not enough memory to decode the image", source=name) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        raise _decode_error(exc, name) from exc
    except Exception as exc:
        raise ImageDecodeError(
            f"the decoder failed ({type(exc).__name__}: {exc})", source=name
        ) from exc


# Caller-owned PIL images are shared objects: seeking one from several threads at
# once crashes Pillow, so they are decoded one at a time and left as found.
_CALLER_IMAGE_LOCK = threading.Lock()


def _from_caller_pil(image: Image.Image, name: str, limits: DecodeLimits) -> DecodedImage:
    with _CALLER_IMAGE_LOCK:
        position = image.tell()
        try:
            return _from_pil(image, name, limits, min_size=None)
        finally:
            image.seek(position)


def _decode_error(exc: BaseException, name: str) -> ImageError:
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if "truncated" in lowered or isinstance(exc, EOFError) or "premature end" in lowered:
        return TruncatedImageError(f"the image data is truncated ({text})", source=name)
    return ImageDecodeError(f"the image data is corrupt ({text})", source=name)


def _from_bytes(
    data: bytes, name: str, limits: DecodeLimits, min_size: tuple[int, int] | None
) -> DecodedImage:
    try:
        image = Image.open(io.BytesIO(data), formats=_available_formats())
    except UnidentifiedImageError as exc:
        raise _unidentified(data, name) from exc
    return _from_pil(image, name, limits, min_size)


def _available_formats() -> tuple[str, ...]:
    """The supported formats this Pillow build can open (AVIF needs libavif)."""
    Image.init()
    return tuple(fmt for fmt in SUPPORTED_FORMATS if fmt in Image.OPEN)


def _unidentified(data: bytes, name: str) -> ImageError:
    head = data[:512].lstrip().lower()
    for signature, fmt in _UNSUPPORTED_SIGNATURES:
        if data.startswith(signature) or head.startswith(signature.lower()):
            return UnsupportedFormatError(
                f"{fmt} images are not supported (supported: {', '.join(SUPPORTED_FORMATS)})",
                source=name,
            )
    if _NETPBM.match(data):
        return UnsupportedFormatError(
            f"Netpbm images are not supported (supported: {', '.join(SUPPORTED_FORMATS)})",
            source=name,
        )
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return UnsupportedFormatError(
            f"HEIF images are not supported (supported: {', '.join(SUPPORTED_FORMATS)})",
            source=name,
        )
    return NotAnImageError("the data is not a recognised image", source=name)


def _check_pixels(size: tuple[int, int], name: str, limits: DecodeLimits) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageDecodeError(f"the image has an invalid size {width}x{height}", source=name)
    if width * height > limits.max_pixels:
        raise TooManyPixelsError(
            f"{width}x{height} = {width * height:,} pixels exceeds the "
            f"{limits.max_pixels:,}-pixel limit",
            source=name,
        )


def _from_pil(
    image: Image.Image, name: str, limits: DecodeLimits, min_size: tuple[int, int] | None
) -> DecodedImage:
    size = image.size
    _check_pixels(size, name, limits)

    # Pixels are loaded before EXIF is read: for some formats (PNG) reading EXIF
    # loads the image, and a decode error there must not be mistaken for bad EXIF.
    # Each frame is turned upright by its own EXIF orientation (Pillow's
    # exif_transpose, which also reads TIFF's orientation tag).
    if not getattr(image, "is_animated", False):
        if (
            min_size is not None
            and limits.dct_scaling
            and image.format in _JPEG_FORMATS
            and size[0] * size[1] >= limits.dct_scaling_min_pixels
        ):
            # DCT scaling decodes straight to a smaller size. The request is square
            # so that both sides stay >= what the model resizes to, whatever the
            # EXIF rotation.
            side = max(min_size)
            image.draft(None, (side, side))
        image.load()
        return DecodedImage(
            frames=(_finish_frame(image, limits),),
            frame_indices=(0,),
            frame_count=1,
            format=image.format,
            size=size,
        )

    frame_count = _count_frames(image, name, limits)
    frames = []
    indices = _sample_frame_indices(frame_count, limits)
    for index in indices:
        image.seek(index)
        _check_pixels(image.size, name, limits)
        image.load()
        frames.append(_reduced(_finish_frame(image, limits), min_size))
    return DecodedImage(
        frames=tuple(frames),
        frame_indices=tuple(indices),
        frame_count=frame_count,
        format=image.format,
        size=size,
    )


def _count_frames(image: Image.Image, name: str, limits: DecodeLimits) -> int:
    """Frames reachable within the limits, found by seeking forward one at a time.

    Pillow's ``n_frames`` scans the whole file (quadratically for TIFF); counting
    stops at ``max_frames_scanned`` frames or ``max_animation_pixels`` pixels, and
    every frame's own size is checked against ``max_pixels``.
    """
    count, pixels = 1, image.size[0] * image.size[1]
    while count < limits.max_frames_scanned:
        try:
            image.seek(count)
        except EOFError:
            break
        _check_pixels(image.size, name, limits)
        pixels += image.size[0] * image.size[1]
        if pixels > limits.max_animation_pixels:
            break
        count += 1
    image.seek(0)
    return count


def _upright(image: Image.Image) -> Image.Image:
    """A copy of ``image`` turned by its EXIF orientation.

    Malformed EXIF leaves the pixels as stored: the image itself decoded, and its
    orientation is metadata that cannot be read, not corrupt image data.
    """
    try:
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, TypeError, KeyError, struct.error, OSError):
        return image.copy()


def _finish_frame(image: Image.Image, limits: DecodeLimits) -> Image.Image:
    return to_rgb(_upright(image), limits.background)


def _reduced(frame: Image.Image, min_size: tuple[int, int] | None) -> Image.Image:
    """``frame`` shrunk by the largest whole factor that keeps both sides at least as
    large as the model's resize target (a box filter, like DCT scaling for JPEG)."""
    if min_size is None:
        return frame
    side = max(min_size)
    factor = min(frame.width // side, frame.height // side)
    return frame.reduce(factor) if factor >= 2 else frame


def _sample_frame_indices(frame_count: int, limits: DecodeLimits) -> list[int]:
    """Evenly spaced frames, always including the first and the last reachable one."""
    count = min(limits.max_frames, frame_count)
    if count == 1:
        return [0]
    positions = np.linspace(0, frame_count - 1, num=count)
    return sorted({round(p) for p in positions})


def _from_array(array: np.ndarray, name: str, limits: DecodeLimits) -> DecodedImage:
    if array.ndim in (2, 3) and array.size:
        # Checked before any copy: a broadcast view can be huge once materialised.
        _check_pixels((array.shape[1], array.shape[0]), name, limits)
    image = array_to_pil(array, name)
    return _from_pil(image, name, limits, min_size=None)
