"""The parity gate: a faster path must agree with fp32 eager on a fixed image set,
including images that land near the decision threshold.

Synthetic images and the bundled photos alone are scored near 0 by a real NSFW
model, where even a large change in logits moves the score very little, so a
label flip could never show. The gate therefore adds blends between the lowest-
and highest-scoring inputs, narrowed step by step (false position on the
log-odds, inside a shrinking bracket) onto where the reference crosses the
threshold, and compares scores there too. pixguard ships no NSFW
image, so the base set also holds a synthetic colour field that open_nsfw itself
scores above its threshold (made once by ``scripts/make_parity_field.py``): for
open_nsfw it is the high end of the blends.

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

from .._exceptions import RuntimeUnavailableError
from ..images import Preprocessing, preprocess
from ._base import Runtime
from ._explain import nsfw_log_odds

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
#: Bracketing steps per pair of inputs; each one narrows the blends' bracket around
#: the crossing.
BISECTION_STEPS = 6
#: The next blend weight stays at least this fraction of the bracket from either end.
BRACKET_GUARD = 0.2
_SYNTHETIC_IMAGE_COUNT = 16
_PARITY_SEED = 20261125
_INPUTS = Path(__file__).parent / "parity_inputs"
_PHOTO_NAMES = ("chelsea.png", "rocket.jpg")
#: Synthetic fields that a bundled model scores above its threshold (see SOURCES.md).
_HIGH_SCORING_FIELDS = ("opennsfw_field.png",)

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
    the photos bundled with pixguard, then the high-scoring fields. Every machine
    checks the same images."""
    bundled = []
    for name in _PHOTO_NAMES + _HIGH_SCORING_FIELDS:
        with Image.open(_INPUTS / name) as image:
            bundled.append(image.convert("RGB"))
    return _synthetic_images(_SYNTHETIC_IMAGE_COUNT) + bundled


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


def _log_odds(scores: np.ndarray) -> np.ndarray:
    return nsfw_log_odds(np.asarray(scores, dtype=np.float64)[:, None], (0,))


def _next_alpha(bracket: tuple[float, float, float, float], target: float) -> float:
    """Where the line through the bracket's log-odds meets the threshold's (false
    position), kept off the bracket's ends so that the bracket always shrinks."""
    lo, hi, odds_lo, odds_hi = bracket
    fraction = (target - odds_lo) / (odds_hi - odds_lo) if odds_hi > odds_lo else 0.5
    fraction = min(max(fraction, BRACKET_GUARD), 1 - BRACKET_GUARD)
    return lo + fraction * (hi - lo)


def _bisect(
    reference: Runtime,
    base: np.ndarray,
    base_scores: np.ndarray,
    pairs: list[tuple[int, int]],
    threshold: float,
) -> tuple[list[Blend], list[float]]:
    """Blend each pair towards the point where the reference crosses the threshold,
    keeping every step: the blends close in on the threshold from both sides.

    Each step narrows a bracket ``[lo, hi]`` of blend weights whose scores lie on
    either side of the threshold; the next weight is read off the log-odds, which
    are close to linear near the crossing, so few steps land close to it."""
    blends: list[Blend] = []
    scores: list[float] = []
    target = float(_log_odds(np.array([threshold]))[0])
    odds = _log_odds(base_scores)
    brackets = [(0.0, 1.0, float(odds[low]), float(odds[high])) for low, high in pairs]
    for _ in range(BISECTION_STEPS if pairs else 0):
        step = [
            (low, high, _next_alpha(bracket, target))
            for (low, high), bracket in zip(pairs, brackets, strict=True)
        ]
        step_scores = _scores(reference, np.stack([_blend(base, blend) for blend in step]))
        step_odds = _log_odds(step_scores)
        for index, (blend, score) in enumerate(zip(step, step_scores, strict=True)):
            lo, hi, odds_lo, odds_hi = brackets[index]
            brackets[index] = (
                (lo, blend[2], odds_lo, float(step_odds[index]))
                if score >= threshold
                else (blend[2], hi, float(step_odds[index]), odds_hi)
            )
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
        return _with_blends(self, _base_batch(preprocessing))

    def to_dict(self) -> dict[str, Any]:
        return {"blends": [list(b) for b in self.blends], "scores": list(self.scores)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParityReference:
        blends = tuple((int(b[0]), int(b[1]), float(b[2])) for b in data["blends"])
        return cls(blends=blends, scores=tuple(float(s) for s in data["scores"]))


def _with_blends(reference: ParityReference, base: np.ndarray) -> np.ndarray:
    if not reference.blends:
        return base
    return np.concatenate([base, np.stack([_blend(base, b) for b in reference.blends])])


def parity_reference(reference: Runtime, *, threshold: float) -> ParityReference:
    """Score the base images on ``reference`` and add blends near ``threshold``."""
    return _record(reference, _base_batch(reference.spec.preprocessing), threshold)


def _record(reference: Runtime, base: np.ndarray, threshold: float) -> ParityReference:
    base_scores = _scores(reference, base)
    blends, blend_scores = _bisect(
        reference, base, base_scores, _bisection_pairs(base_scores, threshold), threshold
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
    return _compare(
        reference,
        candidate,
        reference.batch(candidate.spec.preprocessing),
        threshold=threshold,
        tolerance=tolerance,
    )


def _compare(
    reference: ParityReference,
    candidate: Runtime,
    batch: np.ndarray,
    *,
    threshold: float,
    tolerance: float,
) -> ParityReport:
    ref = np.asarray(reference.scores, dtype=np.float64)
    if len(batch) != len(ref):
        # Recorded on another version's parity inputs: its scores belong to other images.
        raise RuntimeUnavailableError(
            f"the recorded parity reference holds {len(ref)} scores for {len(batch)} "
            "parity inputs (it was recorded by another version of pixguard); "
            "export the model again with this version",
            source=candidate.spec.name,
        )
    cand = _scores(candidate, batch)
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
    preprocessing = reference.spec.preprocessing
    base = _base_batch(preprocessing)
    recorded = _record(reference, base, threshold)
    # Building the base batch is a good part of the gate's time; reuse it when the
    # candidate prepares its input as the reference does (it nearly always does).
    batch = (
        _with_blends(recorded, base)
        if candidate.spec.preprocessing == preprocessing
        else recorded.batch(candidate.spec.preprocessing)
    )
    return _compare(recorded, candidate, batch, threshold=threshold, tolerance=tolerance)
