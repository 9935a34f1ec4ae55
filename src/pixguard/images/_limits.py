"""Limits that bound the work and memory one input can cost."""

from __future__ import annotations

from dataclasses import dataclass

from .._files import MIB

__all__ = ["DecodeLimits"]


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds applied to every input before and while it is decoded.

    Attributes:
        max_bytes: largest encoded input accepted (files, bytes, streams).
        max_pixels: largest width x height accepted; checked from the header before
            any pixel is decoded, so decompression bombs cost nothing.
        max_frames: how many frames of an animation are classified, sampled evenly.
        max_frames_scanned: frames of an animation (or pages of a TIFF) looked at;
            later ones are not sampled.
        max_animation_pixels: pixels the decoder may touch while seeking through an
            animation; frames past this budget are not sampled.
        background: RGB colour that transparent pixels are composited on.
        dct_scaling: decode large JPEGs at a reduced scale (Pillow ``draft``) when the
            model needs fewer pixels than the file holds.
        dct_scaling_min_pixels: only JPEGs with at least this many pixels are
            DCT-scaled; smaller ones decode in full, where scaling saves little.
    """

    max_bytes: int = 64 * MIB
    max_pixels: int = 100_000_000
    max_frames: int = 8
    max_frames_scanned: int = 1000
    max_animation_pixels: int = 400_000_000
    background: tuple[int, int, int] = (255, 255, 255)
    dct_scaling: bool = True
    dct_scaling_min_pixels: int = 4_000_000

    def __post_init__(self) -> None:
        for name in (
            "max_bytes",
            "max_pixels",
            "max_frames",
            "max_frames_scanned",
            "max_animation_pixels",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"DecodeLimits.{name} must be at least 1")
        if len(self.background) != 3 or not all(0 <= c <= 255 for c in self.background):
            raise ValueError("DecodeLimits.background must be three integers in 0..255")
