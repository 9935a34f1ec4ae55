"""The typed result of classifying one input."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .._exceptions import PixguardError

__all__ = ["Label", "Prediction"]

Label = Literal["nsfw", "sfw"]


@dataclass(frozen=True)
class Prediction:
    """What one model decided about one input.

    A prediction always names the model and the threshold that made it. When the
    input could not be used, ``error`` holds the typed error and the score fields
    are ``None``; other inputs of the same batch are unaffected.

    Attributes:
        source: the input's name: its path, or ``<bytes>``, ``<PIL.Image>`` ...
        model: registry name or folder of the model.
        threshold: the threshold applied to ``nsfw_score``.
        runtime: the runtime and precision that ran the model, e.g. ``openvino/bf16``.
        label: ``"nsfw"`` when ``nsfw_score >= threshold``, else ``"sfw"``.
        nsfw_score: probability of the NSFW class(es); for animations, the highest
            over the sampled frames.
        probabilities: every class probability (of the frame that scored highest).
        embedding: pooled pre-logits features (float32) from the same forward pass.
        frame: index of the frame that gave ``nsfw_score`` (0 for still images).
        frames_classified: how many frames were sampled and classified.
        frame_count: frames in the file (1 for still images).
        error: the reason this input has no result, if it has none.
    """

    source: str
    model: str
    threshold: float
    runtime: str = ""
    label: Label | None = None
    nsfw_score: float | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    frame: int | None = None
    frames_classified: int = 0
    frame_count: int = 0
    error: PixguardError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def is_nsfw(self) -> bool:
        return self.label == "nsfw"

    def raise_for_error(self) -> Prediction:
        """Raise the input's error, if any; return ``self`` otherwise."""
        if self.error is not None:
            raise self.error
        return self

    def to_dict(self, *, include_embedding: bool = False) -> dict[str, Any]:
        """A JSON-ready dict; ``path`` is the input's name."""
        data: dict[str, Any] = {
            "path": self.source,
            "label": self.label,
            "nsfw_score": self.nsfw_score,
            "probabilities": self.probabilities,
            "model": self.model,
            "threshold": self.threshold,
            "runtime": self.runtime,
            "frame": self.frame,
            "frames_classified": self.frames_classified,
            "frame_count": self.frame_count,
            "error": self.error.to_dict() if self.error is not None else None,
        }
        if include_embedding:
            data["embedding"] = None if self.embedding is None else self.embedding.tolist()
        return data
