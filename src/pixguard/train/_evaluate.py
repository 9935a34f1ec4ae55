"""Evaluate a model on labelled images, and calibrate its threshold."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import DatasetError, ModelConfigError
from .._files import write_json_atomic
from ..classify import Classifier
from ..models import CONFIG_NAME, read_config
from ._data import Dataset, load_dataset
from ._metrics import operating_point, pr_curve, report, save_curves

__all__ = ["Scores", "calibrate", "evaluate", "nsfw_truth", "score_dataset"]

_IMPLICIT_NSFW = frozenset({"nsfw", "unsafe", "porn", "explicit"})


def nsfw_truth(
    dataset: Dataset, nsfw_classes: Sequence[str] | None, model_nsfw: Sequence[str] = ()
) -> np.ndarray:
    """Which samples are NSFW: the classes named, else those matching the model's
    NSFW labels or an unambiguous name (nsfw, unsafe, ...)."""
    if nsfw_classes:
        unknown = [c for c in nsfw_classes if c not in dataset.classes]
        if unknown:
            raise DatasetError(
                f"NSFW classes {unknown} are not in the dataset's classes {list(dataset.classes)}"
            )
        chosen = set(nsfw_classes)
    else:
        wanted = {label.lower() for label in model_nsfw} | _IMPLICIT_NSFW
        chosen = {c for c in dataset.classes if c.lower() in wanted}
        if not chosen or len(chosen) == len(dataset.classes):
            raise DatasetError(
                f"cannot tell which of the classes {list(dataset.classes)} are NSFW; name them with --nsfw-class"
            )
    return np.array([s.label in chosen for s in dataset.samples], dtype=bool)


@dataclass(frozen=True)
class Scores:
    truth: np.ndarray
    scores: np.ndarray
    failed: list[dict[str, str]]


def score_dataset(
    classifier: Classifier, dataset: Dataset, truth: np.ndarray, *, batch_size: int = 16
) -> Scores:
    scores, keep, failed = [], [], []
    for i, prediction in enumerate(classifier.iter_predict(dataset.paths, batch_size=batch_size)):
        if prediction.error is not None:
            failed.append({"path": prediction.source, **prediction.error.to_dict()})
        else:
            scores.append(prediction.nsfw_score)
            keep.append(i)
    if not keep:
        raise DatasetError("no image of the dataset could be read")
    return Scores(truth[np.array(keep)], np.array(scores, dtype=np.float64), failed)


def evaluate(
    data: str | os.PathLike[str] | Dataset,
    classifier: Classifier,
    *,
    nsfw_classes: Sequence[str] | None = None,
    output: Path | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Metrics of ``classifier`` on ``data``; with ``output``, also metrics.json and
    PR/ROC curves as PNG there."""
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    truth = nsfw_truth(dataset, nsfw_classes, classifier.spec.nsfw_labels)
    scored = score_dataset(classifier, dataset, truth, batch_size=batch_size)
    result = {
        "model": classifier.name,
        "runtime": classifier.runtime_name,
        **report(scored.truth, scored.scores, classifier.threshold),
        "unreadable": scored.failed,
    }
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        plots = save_curves(
            scored.truth,
            scored.scores,
            output,
            threshold=classifier.threshold,
            title=Path(classifier.name).name,
        )
        result["plots"] = [str(p) for p in plots]
        write_json_atomic(output / "metrics.json", result)
    return result


def calibrate(
    data: str | os.PathLike[str] | Dataset,
    model_folder: str | os.PathLike[str],
    *,
    target_precision: float | None = None,
    target_recall: float | None = None,
    nsfw_classes: Sequence[str] | None = None,
    runtime: str = "auto",
    batch_size: int = 16,
) -> dict[str, Any]:
    """Pick the threshold meeting the target on ``data`` and write it into the model
    folder's config.json. For a precision target, the lowest such threshold (most
    recall); for a recall target, the highest (most precision)."""
    if (target_precision is None) == (target_recall is None):
        raise DatasetError("give exactly one of target precision or target recall")
    target = target_precision if target_precision is not None else target_recall
    if target is None or not 0.0 < float(target) <= 1.0:
        raise DatasetError("a target is a fraction in (0, 1]")
    folder = Path(model_folder)
    config = read_config(folder)
    classifier = Classifier.load(folder, runtime=runtime)
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    truth = nsfw_truth(dataset, nsfw_classes, classifier.spec.nsfw_labels)
    scored = score_dataset(classifier, dataset, truth, batch_size=batch_size)
    precision, recall, thresholds = pr_curve(scored.truth, scored.scores)
    if target_precision is not None:
        meets = np.flatnonzero(precision >= target_precision)
        # pr_curve runs from the highest threshold down: the last that meets the
        # target keeps the most recall.
        chosen = meets[np.argmax(recall[meets])] if len(meets) else None
    else:
        meets = np.flatnonzero(recall >= target_recall)
        chosen = meets[np.argmax(precision[meets])] if len(meets) else None
    if chosen is None:
        kind = "precision" if target_precision is not None else "recall"
        raise DatasetError(f"no threshold reaches {kind} {target} on this data")
    # Half-way to the next lower score: the same decisions on this data, without
    # depending on a bit-exact recomputation of the chosen sample's score.
    lower = thresholds[chosen + 1] if chosen + 1 < len(thresholds) else 0.0
    threshold = float((thresholds[chosen] + lower) / 2)
    own = config.get("pixguard") or {}
    if not isinstance(own, dict):
        raise ModelConfigError("config.json's pixguard field is not an object", source=str(folder))
    config["pixguard"] = own
    own["threshold"] = threshold
    own["calibration"] = {
        "target_precision": target_precision,
        "target_recall": target_recall,
        "samples": len(scored.truth),
    }
    write_json_atomic(folder / CONFIG_NAME, config)
    return {
        "model": str(folder),
        **operating_point(scored.truth, scored.scores, threshold),
        "samples": len(scored.truth),
    }
