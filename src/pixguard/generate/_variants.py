"""Stable Diffusion 3.5 variants with the official recommended defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["VARIANTS", "Variant"]


@dataclass(frozen=True)
class Variant:
    name: str
    repo: str
    steps: int
    guidance: float
    min_pixels: int
    max_pixels: int
    default_size: tuple[int, int] = (1024, 1024)
    skip_layer_guidance: tuple[int, ...] = field(default=())


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "sd3.5-large",
            "stabilityai/stable-diffusion-3.5-large",
            steps=28,
            guidance=3.5,
            min_pixels=512 * 512,
            max_pixels=1536 * 1536,
        ),
        Variant(
            "sd3.5-large-turbo",
            "stabilityai/stable-diffusion-3.5-large-turbo",
            steps=4,
            guidance=0.0,
            min_pixels=512 * 512,
            max_pixels=1536 * 1536,
        ),
        Variant(
            "sd3.5-medium",
            "stabilityai/stable-diffusion-3.5-medium",
            steps=40,
            guidance=4.5,
            min_pixels=512 * 512,
            max_pixels=1440 * 1440,
            skip_layer_guidance=(7, 8, 9),
        ),
    )
}
