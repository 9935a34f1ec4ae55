"""Numpy arrays from callers, as PIL images (H x W, H x W x 1/3/4; uint8, uint16,
bool, or floats in 0..1)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .._exceptions import EmptyImageError, InvalidImageInputError

__all__ = ["array_to_pil"]


def array_to_pil(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InvalidImageInputError(
            f"array shape {array.shape} is not H x W, H x W x 1, H x W x 3 or H x W x 4",
            source=name,
        )
    if array.size == 0:
        raise EmptyImageError(f"array shape {array.shape} has no pixels", source=name)
    if array.dtype.byteorder not in ("=", "|"):
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InvalidImageInputError("float array contains NaN or infinity", source=name)
        array = np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise InvalidImageInputError(
            f"array dtype {array.dtype} is not supported (use uint8, uint16, bool or float)",
            source=name,
        )
    return Image.fromarray(np.ascontiguousarray(array))
