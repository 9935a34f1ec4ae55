"""Bring any Pillow image mode to 8-bit RGB, the way a viewer would show it."""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["to_rgb"]

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_UINT16_TO_UINT8_SHIFT = 8


def _has_alpha(image: Image.Image) -> bool:
    if image.mode in _ALPHA_MODES:
        return True
    return image.mode in {"P", "L", "RGB"} and "transparency" in image.info


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer and float greyscale to 8 bits.

    Pillow's own ``convert("L")`` clips these at 255 instead of scaling, which turns
    most 16-bit images white.
    """
    array = np.asarray(image)
    if image.mode in _SIXTEEN_BIT_MODES:
        scaled = array.astype(np.uint16) >> _UINT16_TO_UINT8_SHIFT
    elif image.mode == "I":
        # 32-bit integer images almost always hold 16-bit samples (TIFF, PNG);
        # anything that fits in 8 bits is kept as it is.
        full_scale = 65535.0 if array.max(initial=0) > 255 else 255.0
        scaled = np.clip(array, 0, full_scale).astype(np.float32) * np.float32(255.0 / full_scale)
    else:  # "F": floats in 0..1 (or 0..255 when any value exceeds 1)
        full_scale = 255.0 if np.nanmax(array, initial=0.0) > 1.0 else 1.0
        scaled = np.nan_to_num(np.clip(array, 0.0, full_scale, dtype=np.float32)) * np.float32(
            255.0 / full_scale
        )
    return Image.fromarray(np.rint(scaled).astype(np.uint8))


def to_rgb(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Return an 8-bit RGB copy of ``image``, compositing alpha on ``background``."""
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in {"I", "F"}:
        image = _high_depth_to_l(image)
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if image.mode == "RGB":
        return image
    return image.convert("RGB")
