"""Classify images, apply a policy, and queue those it routes to ``review``."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..classify import DEFAULT_BATCH_SIZE, Classifier, Prediction
from ..index import Index
from ..policy import Action, Decision, Policy
from ._queue import ReviewQueue
from ._records import ReviewItem

__all__ = ["Routed", "route_images"]


@dataclass(frozen=True)
class Routed:
    """One input: the model's prediction, the policy's decision, and the queued item
    when the decision was ``review``."""

    source: str
    prediction: Prediction
    decision: Decision
    bank_match: bool
    item: ReviewItem | None

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.source,
            "label": self.prediction.label,
            "nsfw_score": self.prediction.nsfw_score,
            "bank_match": self.bank_match,
            **self.decision.to_dict(),
            "item_id": None if self.item is None else self.item.id,
            "error": None if self.prediction.error is None else self.prediction.error.to_dict(),
        }


class _NamedBytes(io.BytesIO):
    """Bytes that keep their file's name, so results and errors name the input."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name


def _read_within_limit(path: Path, max_bytes: int) -> bytes | None:
    """The file's bytes, or None when the classifier should report why not (missing,
    unreadable, too large) from the path itself."""
    try:
        if path.stat().st_size > max_bytes:
            return None
        return path.read_bytes()
    except OSError:
        return None


def route_images(
    paths: Sequence[str | os.PathLike[str]],
    classifier: Classifier,
    policy: Policy,
    queue: ReviewQueue,
    *,
    bank: Index | None = None,
    bank_threshold: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    key_id: int | None = None,
) -> Iterator[Routed]:
    """Classify ``paths`` batch by batch and queue the ones ``policy`` routes to review.

    Each file is read once: the bytes classified are the bytes queued, hashed and
    kept. Memory stays bounded by one batch.
    """
    policy.check_labels(classifier.name, classifier.spec.label_names)
    for start in range(0, len(paths), batch_size):
        chunk = [Path(p) for p in paths[start : start + batch_size]]
        contents = [_read_within_limit(p, classifier.limits.max_bytes) for p in chunk]
        inputs = [
            _NamedBytes(data, str(path)) if data is not None else path
            for path, data in zip(chunk, contents, strict=True)
        ]
        predictions = classifier.predict(inputs, batch_size=batch_size)
        matches = bank.match(predictions, threshold=bank_threshold) if bank is not None else None
        for position, (path, data, prediction) in enumerate(
            zip(chunk, contents, predictions, strict=True)
        ):
            matched = bool(matches[position].matched) if matches is not None else False
            decision = policy.decide(prediction, bank_match=matched)
            item = None
            if decision.action is Action.review and data is not None:
                item = queue.enqueue(
                    data,
                    prediction,
                    decision,
                    source=str(path),
                    key_id=key_id,
                    bank_match=matched,
                    sha256=hashlib.sha256(data).hexdigest(),
                )
            yield Routed(str(path), prediction, decision, matched, item)
