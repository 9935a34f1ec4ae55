"""Known-bad banks: an index of known-bad images, matched by the nearest entry to
each new image's embedding, whatever the classifier's score."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..classify import Prediction
from ._results import Hit

__all__ = ["DEFAULT_BANK_THRESHOLD", "BankMatch", "BankQuery"]

#: Cosine similarity above which a bank entry flags an image as a re-upload.
DEFAULT_BANK_THRESHOLD = 0.92


@dataclass(frozen=True)
class BankMatch:
    """The nearest known-bad entry to one image, and whether it counts as a match."""

    nearest: Hit | None
    threshold: float

    @property
    def matched(self) -> bool:
        return self.nearest is not None and self.nearest.similarity >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        nearest = self.nearest
        return {
            "bank_match": self.matched,
            "bank_nearest": None
            if nearest is None
            else {
                "id": nearest.entry.id,
                "similarity": nearest.similarity,
                "source": nearest.entry.source,
            },
        }


class BankQuery:
    """The predictions a bank can match (those with an embedding), and their results
    put back in the predictions' order."""

    def __init__(self, predictions: Sequence[Prediction]) -> None:
        self._count = len(predictions)
        self._usable = [
            (i, p.model, p.embedding)
            for i, p in enumerate(predictions)
            if p.ok and p.embedding is not None
        ]
        self.positions = [i for i, _, _ in self._usable]

    @property
    def model(self) -> str:
        """The model of the first usable prediction (they come from one classifier)."""
        return self._usable[0][1]

    @property
    def dim(self) -> int:
        return int(self._usable[0][2].shape[0])

    def vectors(self) -> np.ndarray:
        return np.stack([embedding for _, _, embedding in self._usable])

    def unmatched(self, threshold: float) -> list[BankMatch]:
        return [BankMatch(None, threshold) for _ in range(self._count)]

    def results(self, nearest: Sequence[list[Hit]], threshold: float) -> list[BankMatch]:
        """One match per prediction: ``nearest`` holds the hits of the usable ones, in
        order; the others match nothing."""
        results = self.unmatched(threshold)
        for position, hits in zip(self.positions, nearest, strict=True):
            results[position] = BankMatch(hits[0] if hits else None, threshold)
        return results
