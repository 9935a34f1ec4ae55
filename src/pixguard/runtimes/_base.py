"""The interface every runtime implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..models import ModelSpec

__all__ = ["Runtime", "RuntimeOutput"]


@dataclass(frozen=True)
class RuntimeOutput:
    """One forward pass over a batch.

    Attributes:
        probabilities: (N, num_classes) float32, in ``spec.label_names`` order.
        embeddings: (N, embedding_dim) float32 pooled pre-logits features, as the
            network computed them (not normalised).
    """

    probabilities: np.ndarray
    embeddings: np.ndarray


class Runtime(Protocol):
    """A loaded model that turns preprocessed batches into probabilities + embeddings.

    ``spec`` is the resolved spec: for Hub and folder models it reflects the
    config.json that was actually loaded.
    """

    spec: ModelSpec
    kind: str
    """``torch``, ``onnxruntime`` or ``openvino``."""
    precision: str
    """``fp32``, ``bf16`` or ``int8``."""

    def run(self, batch: np.ndarray) -> RuntimeOutput:
        """Run one forward pass over ``batch`` (preprocessed, in ``spec`` layout)."""
        ...
