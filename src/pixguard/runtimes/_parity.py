"""The parity gate: a faster path must agree with fp32 eager on a fixed image set,
including images that land near the decision threshold.

Synthetic images and the bundled photos alone are scored near 0 by a real NSFW
model, where even a large change in logits moves the score very little, so a
label flip could never show. The gate therefore adds blends found by bisection
between the lowest- and highest-scoring inputs, which land where the reference
crosses the threshold, and compares scores there too.

The reference scores and the blends are recorded (:class:`ParityReference`), so a
path can be checked again where the reference model is not at hand (an int8
export loaded on another machine).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..images import Preprocessing, preprocess
from ._base import Runtime

__all__ = [
    "PARITY_TOLERANCE",
    "ParityReference",
    "ParityReport",
    "check_parity",
    "compare_with_reference",
    "parity_images",
    "parity_reference",
]

#: Largest |delta nsfw_score| a faster path may show against fp32 eager.
PARITY_TOLERANCE = 0.01
#: Scores this close to the threshold may flip label without failing the gate.
LABEL_MARGIN = 0.01
#: A reference score this close to the threshold counts as a near-threshold input.
NEAR_THRESHOLD = 0.1
#: Bisection steps per pair of inputs; each halves the blend's distance to the crossing.
BISECTION_STEPS = 6
_SYNTHETIC_IMAGE_COUNT = 16
_PARITY_SEED = 20261125
_PHOTOS = Path(__file__).parent / "parity_photos"
_PHOTO_NAMES = ("chelsea.png", "rocket.jpg")

#: One blend: ``(1 - alpha) * input[low] + alpha * input[high]`` in model-input space.
Blend = tuple[int, int, float]


def _synthetic_images(count: int) -> list[Image.Image]:
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


def parity_images() -> list[Image.Image]:
    """The fixed base set: synthetic gradients, shapes and noise from a fixed seed,
    then the photos bundled with pixguard. Every machine checks the same images."""
    photos = []
    for name in _PHOTO_NAMES:
        with Image.open(_PHOTOS / name) as photo:
            photos.append(photo.convert("RGB"))
    return _synthetic_images(_SYNTHETIC_IMAGE_COUNT) + photos


def _base_batch(preprocessing: Preprocessing) -> np.ndarray:
    return np.stack([preprocess(image, preprocessing) for image in parity_images()])


def _blend(base: np.ndarray, blend: Blend) -> np.ndarray:
    low, high, alpha = blend
    return ((1 - alpha) * base[low] + alpha * base[high]).astype(np.float32)


def _scores(runtime: Runtime, batch: np.ndarray, batch_size: int = 8) -> np.ndarray:
    nsfw = list(runtime.spec.nsfw_indices)
    chunks = [
        runtime.run(batch[start : start + batch_size]).probabilities[:, nsfw].sum(axis=1)
        for start in range(0, len(batch), batch_size)
    ]
    return np.concatenate(chunks).astype(np.float64)


def _bisection_pairs(scores: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs of inputs that straddle the threshold: the extremes, and the two
    closest to it from either side."""
    below = [i for i in range(len(scores)) if scores[i] < threshold]
    above = [i for i in range(len(scores)) if scores[i] >= threshold]
    if not below or not above:
        return []
    extremes = (min(below, key=lambda i: scores[i]), max(above, key=lambda i: scores[i]))
    closest = (max(below, key=lambda i: scores[i]), min(above, key=lambda i: scores[i]))
    return list(dict.fromkeys([extremes, closest]))


def _bisect(
    reference: Runtime, base: np.ndarray, pairs: list[tuple[int, int]], threshold: float
) -> tuple[list[Blend], list[float]]:
    """Blend each pair towards the point where the reference crosses the threshold,
    keeping every step: the blends close in on the threshold from both sides."""
    blends: list[Blend] = []
    scores: list[float] = []
    if not pairs:
        return blends, scores
    bounds = [(0.0, 1.0) for _ in pairs]
    for _ in range(BISECTION_STEPS):
        step = [
            (low, high, (lo + hi) / 2) for (low, high), (lo, hi) in zip(pairs, bounds, strict=True)
        ]
        step_scores = _scores(reference, np.stack([_blend(base, blend) for blend in step]))
        for index, (blend, score) in enumerate(zip(step, step_scores, strict=True)):
            lo, hi = bounds[index]
            bounds[index] = (lo, blend[2]) if score >= threshold else (blend[2], hi)
        blends.extend(step)
        scores.extend(float(s) for s in step_scores)
    return blends, scores


@dataclass(frozen=True)
class ParityReference:
    """The gate's inputs and fp32 eager's scores on them, recordable as JSON."""

    blends: tuple[Blend, ...]
    scores: tuple[float, ...]
    """Reference scores: the base images in order, then the blends."""

    def batch(self, preprocessing: Preprocessing) -> np.ndarray:
        base = _base_batch(preprocessing)
        if not self.blends:
            return base
        return np.concatenate([base, np.stack([_blend(base, b) for b in self.blends])])

    def to_dict(self) -> dict[str, Any]:
        return {"blends": [list(b) for b in self.blends], "scores": list(self.scores)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParityReference:
        blends = tuple((int(b[0]), int(b[1]), float(b[2])) for b in data["blends"])
        return cls(blends=blends, scores=tuple(float(s) for s in data["scores"]))


def parity_reference(reference: Runtime, *, threshold: float) -> ParityReference:
    """Score the base images on ``reference`` and add blends near ``threshold``."""
    base = _base_batch(reference.spec.preprocessing)
    base_scores = _scores(reference, base)
    blends, blend_scores = _bisect(
        reference, base, _bisection_pairs(base_scores, threshold), threshold
    )
    return ParityReference(
        blends=tuple(blends), scores=tuple(float(s) for s in base_scores) + tuple(blend_scores)
    )


@dataclass(frozen=True)
class ParityReport:
    """How a candidate path compared with fp32 eager on the parity images."""

    max_abs_diff: float
    label_mismatches: int
    images: int
    tolerance: float
    passed: bool
    near_threshold: int = 0
    """Inputs whose reference score is within :data:`NEAR_THRESHOLD` of the threshold."""

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def compare_with_reference(
    reference: ParityReference,
    candidate: Runtime,
    *,
    threshold: float,
    tolerance: float = PARITY_TOLERANCE,
) -> ParityReport:
    """Run ``candidate`` on the recorded inputs and compare with the recorded scores."""
    ref = np.asarray(reference.scores, dtype=np.float64)
    cand = _scores(candidate, reference.batch(candidate.spec.preprocessing))
    diff = float(np.abs(ref - cand).max())
    decisive = np.abs(ref - threshold) > LABEL_MARGIN
    mismatches = int(((ref >= threshold) != (cand >= threshold))[decisive].sum())
    return ParityReport(
        max_abs_diff=diff,
        label_mismatches=mismatches,
        images=len(ref),
        tolerance=tolerance,
        passed=bool(diff <= tolerance and mismatches == 0 and np.isfinite(cand).all()),
        near_threshold=int((np.abs(ref - threshold) <= NEAR_THRESHOLD).sum()),
    )


def check_parity(
    reference: Runtime,
    candidate: Runtime,
    *,
    threshold: float,
    tolerance: float = PARITY_TOLERANCE,
) -> ParityReport:
    """Compare NSFW scores of ``candidate`` against ``reference`` (fp32 eager)."""
    return compare_with_reference(
        parity_reference(reference, threshold=threshold),
        candidate,
        threshold=threshold,
        tolerance=tolerance,
    )
