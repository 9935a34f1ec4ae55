"""The parity gate: a faster path must agree with fp32 eager on a fixed image set."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..images import preprocess
from ._base import Runtime

__all__ = ["PARITY_TOLERANCE", "ParityReport", "check_parity", "parity_images"]

#: Largest |delta nsfw_score| a faster path may show against fp32 eager.
PARITY_TOLERANCE = 0.01
#: Scores this close to the threshold may flip label without failing the gate.
LABEL_MARGIN = 0.01
_PARITY_IMAGE_COUNT = 16
_PARITY_SEED = 20261125


def parity_images(count: int = _PARITY_IMAGE_COUNT) -> list[Image.Image]:
    """A fixed, varied set of synthetic images: gradients, shapes, textures, noise.

    Generated from a fixed seed so every machine checks the same images, with no
    files to ship or download.
    """
    rng = np.random.default_rng(_PARITY_SEED)
    images = []
    for index in range(count):
        width, height = (int(v) for v in rng.integers(160, 640, size=2))
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, size=3)
        frequency = rng.uniform(0.005, 0.08, size=3)
        channels = [
            127 + 120 * np.sin(frequency[c] * (xx * np.cos(phase[c]) + yy * np.sin(phase[c])))
            for c in range(3)
        ]
        array = np.stack(channels, axis=2) + rng.normal(0, 6 + index, size=(height, width, 3))
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 6))):
            box = (
                sorted(rng.integers(0, width, 2).tolist()),
                sorted(rng.integers(0, height, 2).tolist()),
            )
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            draw.ellipse((box[0][0], box[1][0], box[0][1], box[1][1]), fill=colour)
        images.append(image)
    return images


@dataclass(frozen=True)
class ParityReport:
    """How a candidate path compared with fp32 eager on the parity images."""

    max_abs_diff: float
    label_mismatches: int
    images: int
    tolerance: float
    passed: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def check_parity(
    reference: Runtime,
    candidate: Runtime,
    *,
    threshold: float,
    tolerance: float = PARITY_TOLERANCE,
    batch_size: int = 8,
) -> ParityReport:
    """Compare NSFW scores of ``candidate`` against ``reference`` (fp32 eager)."""
    spec = reference.spec
    nsfw = list(spec.nsfw_indices)
    batch = np.stack([preprocess(image, spec.preprocessing) for image in parity_images()])
    ref_scores, cand_scores = [], []
    for start in range(0, len(batch), batch_size):
        chunk = batch[start : start + batch_size]
        ref_scores.append(reference.run(chunk).probabilities[:, nsfw].sum(axis=1))
        cand_scores.append(candidate.run(chunk).probabilities[:, nsfw].sum(axis=1))
    ref = np.concatenate(ref_scores).astype(np.float64)
    cand = np.concatenate(cand_scores).astype(np.float64)
    diff = float(np.abs(ref - cand).max())
    decisive = np.abs(ref - threshold) > LABEL_MARGIN
    mismatches = int(((ref >= threshold) != (cand >= threshold))[decisive].sum())
    return ParityReport(
        max_abs_diff=diff,
        label_mismatches=mismatches,
        images=len(ref),
        tolerance=tolerance,
        passed=bool(diff <= tolerance and mismatches == 0 and np.isfinite(cand).all()),
    )
