"""The safety gate: every generated image is classified before it leaves."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image, ImageFilter

from .._exceptions import InputImageRefusedError, InvalidThresholdError
from ..classify import Classifier

__all__ = ["BlurScope", "GateAction", "GateDecision", "SafetyGate"]

logger = logging.getLogger("pixguard.generate")
GateAction = Literal["block", "blur", "allow-flagged"]
#: ``whole`` blurs the whole image; ``region`` only where the explanation points,
#: falling back to ``whole`` when that is not enough (Classifier.redact).
BlurScope = Literal["region", "whole"]
#: Blur radius as a fraction of the longer side: nothing recognisable survives.
BLUR_FRACTION = 0.08


@dataclass(frozen=True)
class GateDecision:
    """What the gate did with one image. ``image`` is None when it was blocked."""

    decision: Literal["allowed", "blocked", "blurred", "allowed-flagged"]
    nsfw_score: float | None
    model: str
    threshold: float
    reason: str | None
    image: Image.Image | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "nsfw_score": self.nsfw_score,
            "safety_model": self.model,
            "threshold": self.threshold,
            "reason": self.reason,
        }


class SafetyGate:
    """Classifies images with a pixguard Classifier and applies the policy action.

    It fails closed: when the classifier fails on an image, for any reason (an
    error, or a score that is not a finite number), the image is blocked. A
    threshold of 1.0 flags nothing, so it is accepted only with the explicit
    ``allow-flagged`` opt-out.
    """

    def __init__(
        self,
        classifier: Classifier,
        *,
        action: GateAction = "block",
        blur_scope: BlurScope = "whole",
    ) -> None:
        if action not in ("block", "blur", "allow-flagged"):
            raise ValueError(f"unknown safety action {action!r}")
        if classifier.threshold >= 1.0 and action != "allow-flagged":
            raise InvalidThresholdError(
                f"a safety threshold of {classifier.threshold} lets every image through; "
                "lower it, or opt out explicitly with the safety action allow-flagged",
                source=classifier.name,
            )
        if blur_scope not in ("region", "whole"):
            raise ValueError(f"unknown blur scope {blur_scope!r}")
        self.blur_scope = blur_scope
        if action == "allow-flagged":
            logger.warning(
                "SAFETY GATE OPT-OUT: images scored above the threshold (%s) WILL be returned "
                "(--safety-action allow-flagged). Every such image is logged.",
                classifier.threshold,
            )
        self.classifier = classifier
        self.action = action

    def check(self, images: list[Image.Image]) -> list[GateDecision]:
        name, threshold = self.classifier.name, self.classifier.threshold
        try:
            predictions = self.classifier.predict(images)
        except Exception as exc:
            return [
                GateDecision(
                    "blocked", None, name, threshold, f"safety classifier failed: {exc}", None
                )
                for _ in images
            ]
        decisions = []
        for image, prediction in zip(images, predictions, strict=True):
            if not prediction.ok or prediction.nsfw_score is None:
                reason = f"safety classifier failed: {prediction.error}"
                decisions.append(GateDecision("blocked", None, name, threshold, reason, None))
            elif not math.isfinite(prediction.nsfw_score):
                # A NaN compares false with everything: never let it reach the policy.
                reason = f"safety classifier failed: nsfw score is {prediction.nsfw_score}"
                decisions.append(GateDecision("blocked", None, name, threshold, reason, None))
            elif prediction.nsfw_score < threshold:
                decisions.append(
                    GateDecision("allowed", prediction.nsfw_score, name, threshold, None, image)
                )
            elif self.action == "blur":
                blurred, reason = self._blur(image)
                decisions.append(
                    GateDecision("blurred", prediction.nsfw_score, name, threshold, reason, blurred)
                )
            elif self.action == "allow-flagged":
                logger.warning(
                    "returning a flagged image (nsfw_score %.3f >= %.3f)",
                    prediction.nsfw_score,
                    threshold,
                )
                decisions.append(
                    GateDecision(
                        "allowed-flagged",
                        prediction.nsfw_score,
                        name,
                        threshold,
                        "nsfw score above the threshold; allowed by opt-out",
                        image,
                    )
                )
            else:
                decisions.append(
                    GateDecision(
                        "blocked",
                        prediction.nsfw_score,
                        name,
                        threshold,
                        "nsfw score above the threshold",
                        None,
                    )
                )
        return decisions

    def _blur(self, image: Image.Image) -> tuple[Image.Image, str]:
        reason = "nsfw score above the threshold"
        if self.blur_scope == "region":
            # Region blur re-classifies and blurs the whole image when that is not
            # enough or the explanation fails; any other failure blurs it whole here.
            try:
                redaction = self.classifier.redact([image], strength=BLUR_FRACTION)[0]
            except Exception as exc:
                logger.warning("region blur failed (%s); blurring the whole image", exc)
            else:
                if redaction.image is not None:
                    return redaction.image, f"{reason}; {redaction.action} blur"
        radius = max(image.size) * BLUR_FRACTION
        return image.filter(ImageFilter.GaussianBlur(radius)), reason

    def screen_input(self, image: Image.Image, source: str) -> None:
        """Refuse an input image (a control image) that the gate would not let out:
        flagged, or not scorable. Under the allow-flagged opt-out it passes, logged."""
        decision = self.check([image])[0]
        if decision.decision in ("blocked", "blurred"):
            score = (
                "not scored" if decision.nsfw_score is None else f"nsfw {decision.nsfw_score:.3f}"
            )
            raise InputImageRefusedError(
                f"the safety model refused this input image ({decision.reason}; {score})",
                source=source,
            )
