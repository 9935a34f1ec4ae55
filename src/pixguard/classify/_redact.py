"""Region blur: blur where the NSFW evidence is, keep the rest sharp, fail closed."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image, ImageFilter

from .._exceptions import PixguardError
from ..images import ImageInput
from ._explain import Explanation, explain_images

if TYPE_CHECKING:
    from ._classifier import Classifier

__all__ = [
    "DEFAULT_BLUR_STRENGTH",
    "DEFAULT_HEAT_THRESHOLD",
    "Redaction",
    "RedactionAction",
    "blur_whole",
    "redact_images",
]

#: Blur radius as a fraction of the image's longer side: nothing recognisable survives.
DEFAULT_BLUR_STRENGTH = 0.08
#: Pixels whose heat (1 = the image's strongest evidence) reaches this are blurred.
DEFAULT_HEAT_THRESHOLD = 0.5
#: The blurred region is grown by this fraction of the longer side, so the edges
#: of what the heatmap found are covered too.
REGION_MARGIN_FRACTION = 0.03
#: When the blurred region is not enough, it is widened: the heat threshold is
#: lowered by these factors in turn (one forward pass each) before the whole image
#: is blurred. Heatmaps are diffuse; the smallest region that works is kept.
REGION_WIDENING = (1.0, 0.6, 0.4)

RedactionAction = Literal["unchanged", "region", "whole"]


@dataclass(frozen=True)
class Redaction:
    """What redaction did with one input.

    Attributes:
        source: the input's name.
        action: ``unchanged`` (scored below the threshold), ``region`` (the hot
            regions were blurred and the result re-classified below the
            threshold) or ``whole`` (the whole image was blurred: the region blur
            was not enough, or the explanation failed). None when the input could
            not be read.
        nsfw_score: the input's score.
        redacted_score: the score of the region-blurred image, when one was made.
        region_fraction: the fraction of the image's pixels that the region blur
            covered.
        reason: why the whole image was blurred.
        image: the output image (None when the input could not be read).
        error: the input's error, if it could not be read.
    """

    source: str
    action: RedactionAction | None
    nsfw_score: float | None = None
    redacted_score: float | None = None
    region_fraction: float = 0.0
    reason: str | None = None
    image: Image.Image | None = field(default=None, repr=False, compare=False)
    error: PixguardError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.source,
            "action": self.action,
            "nsfw_score": self.nsfw_score,
            "redacted_score": self.redacted_score,
            "region_fraction": round(self.region_fraction, 4),
            "reason": self.reason,
            "error": self.error.to_dict() if self.error is not None else None,
        }


def _radius(image: Image.Image, strength: float) -> float:
    return max(image.size) * strength


def blur_whole(image: Image.Image, strength: float = DEFAULT_BLUR_STRENGTH) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(_radius(image, strength)))


def _region_mask(explanation: Explanation, heat_threshold: float) -> Image.Image:
    """An ``L`` mask at the image's size: 255 where the heat reaches the threshold,
    grown by the margin. The heat is thresholded at preview size to bound memory."""
    image = explanation.image
    assert image is not None
    preview = explanation.preview_size()
    hot = (explanation.heat_at(preview) >= heat_threshold).astype(np.uint8) * 255
    mask = Image.fromarray(hot, mode="L").resize(image.size, Image.Resampling.NEAREST)
    margin = round(max(image.size) * REGION_MARGIN_FRACTION)
    if margin > 0:
        mask = mask.filter(ImageFilter.MaxFilter(2 * margin + 1))
    return mask


def _redact_one(
    classifier: Classifier,
    explanation: Explanation,
    strength: float,
    heat_threshold: float,
) -> Redaction:
    prediction = explanation.prediction
    base = Redaction(explanation.source, None, nsfw_score=prediction.nsfw_score)
    if not prediction.ok or prediction.nsfw_score is None or explanation.image is None:
        return replace(base, error=prediction.error)
    image = explanation.image
    if prediction.nsfw_score < classifier.threshold:
        return replace(base, action="unchanged", image=image)
    whole = replace(base, action="whole", image=blur_whole(image, strength))
    if not explanation.ok:
        return replace(whole, reason=f"the explanation failed ({explanation.error}); fails closed")
    blurred = blur_whole(image, strength)
    fraction, check = 0.0, None
    for factor in REGION_WIDENING:
        mask = _region_mask(explanation, heat_threshold * factor)
        fraction = float(np.asarray(mask, np.float32).mean() / 255.0)
        if fraction == 0.0:
            continue
        redacted = Image.composite(blurred, image, mask)
        check = classifier.predict([redacted])[0]
        if not check.ok or check.nsfw_score is None:
            return replace(
                whole,
                region_fraction=fraction,
                reason=f"the redacted image could not be re-classified ({check.error}); fails closed",
            )
        if check.nsfw_score < classifier.threshold:
            return replace(
                base,
                action="region",
                redacted_score=check.nsfw_score,
                region_fraction=fraction,
                image=redacted,
            )
    if check is None:
        return replace(whole, reason="no region reached the heat threshold; fails closed")
    return replace(
        whole,
        redacted_score=check.nsfw_score,
        region_fraction=fraction,
        reason="still above the threshold after the region blur",
    )


def redact_images(
    classifier: Classifier,
    images: list[ImageInput],
    *,
    strength: float = DEFAULT_BLUR_STRENGTH,
    heat_threshold: float = DEFAULT_HEAT_THRESHOLD,
    batch_size: int,
) -> list[Redaction]:
    """Blur the regions of flagged images where the heat reaches ``heat_threshold``;
    blur the whole image when that is not enough or the explanation fails."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    if not 0.0 < heat_threshold <= 1.0:
        raise ValueError(f"heat_threshold must be in (0, 1], got {heat_threshold}")
    # Redaction writes the image back: decode it at full resolution.
    limits = replace(classifier.limits, dct_scaling=False)
    results: list[Redaction] = []
    iterator = iter(images)
    while chunk := list(itertools.islice(iterator, batch_size)):
        for explanation in explain_images(classifier, chunk, batch_size=batch_size, limits=limits):
            results.append(_redact_one(classifier, explanation, strength, heat_threshold))
    return results
