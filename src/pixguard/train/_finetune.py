"""Fine-tune a timm model on labelled images: a linear probe on cached embeddings
(``_probe``, ``_embedding_cache``), or full fine-tuning (``_full``, ``_checkpoint``).
This module holds the settings and the run itself; the result is a model folder
that loads everywhere, with metrics on a named split."""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import DatasetError, TrainingError
from .._files import atomic_text_file, write_json_atomic
from ..classify import Classifier
from ..models import resolve_model
from ..runtimes import ModelArtifacts
from ._config import FinetuneConfig, Progress
from ._data import Dataset, load_dataset
from ._embedding_cache import dataset_embeddings
from ._evaluate import nsfw_truth
from ._full import train_full
from ._metrics import report, save_curves
from ._probe import train_probe

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune"]

logger = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    folder: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def finetune(
    data: str | Path,
    *,
    base: str,
    output: str | Path,
    nsfw_classes: Sequence[str],
    config: FinetuneConfig | None = None,
    val: str | Path | None = None,
    test: str | Path | None = None,
    resume: bool = True,
    progress: Progress | None = None,
) -> FinetuneResult:
    """Train on ``data`` from ``base`` and write a model folder to ``output``.

    ``nsfw_classes`` are the dataset classes that count as NSFW. Validation is a
    stratified split of ``data`` (``config.val_fraction``) unless ``val`` is given;
    it picks the best epoch (early stopping). The metrics are measured on ``test``
    when given, images that played no part in training or stopping; otherwise on
    the validation split, which ``metrics["metrics_split"]`` says, since figures on
    the split that chose the epoch are optimistic. Full fine-tuning keeps
    checkpoints in ``output/checkpoint`` and, with ``resume``, continues from them
    after an interruption.
    """
    import torch
    from timm.models import save_for_hf

    config = config or FinetuneConfig()
    _seed_everything(config.seed)
    dataset = load_dataset(data)
    if val is not None:
        train, validation = dataset, _matching(load_dataset(val), dataset, "validation")
    else:
        train, validation = dataset.split(config.val_fraction, seed=config.seed)
    held_out = _matching(load_dataset(test), dataset, "test") if test is not None else None
    truth_all = nsfw_truth(dataset, nsfw_classes)  # validates the names
    if truth_all.all():
        raise DatasetError("every class is marked NSFW; leave at least one safe class")
    if not len(validation) or not len(train):
        raise DatasetError(
            "the split leaves no training or no validation images; add images or use --val"
        )
    spec = resolve_model(base)
    artifacts = ModelArtifacts(spec)
    if artifacts.loader != "timm":
        raise TrainingError(
            "fine-tuning needs a timm model (safetensors) as the base", source=spec.name
        )
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)

    if config.mode == "linear":
        classifier = Classifier.load(base, runtime="torch")
        model_key = f"{spec.name}:{artifacts.digest()[:24]}"
        combined = Dataset(train.samples + validation.samples, dataset.classes)
        is_val = np.r_[np.zeros(len(train), bool), np.ones(len(validation), bool)]
        x, kept = dataset_embeddings(classifier, combined, model_key, progress)
        targets, in_val = combined.targets[kept], is_val[kept]
        head, history = train_probe(
            x[~in_val],
            targets[~in_val],
            x[in_val],
            targets[in_val],
            len(dataset.classes),
            config,
            progress,
        )
        model = artifacts.torch_fp32().model
        model.reset_classifier(len(dataset.classes))
        with torch.no_grad():
            model.get_classifier().weight.copy_(head.weight)
            model.get_classifier().bias.copy_(head.bias)
    elif config.mode == "full":
        model, history = train_full(
            artifacts, train, validation, config, output / "checkpoint", progress, resume=resume
        )
    else:
        raise TrainingError(f"unknown mode {config.mode!r} (use linear or full)")

    own = {
        "nsfw_labels": list(nsfw_classes),
        "threshold": config.threshold,
        "finetune": {"base": spec.name, **asdict(config)},
    }
    save_for_hf(
        model.eval(),
        str(output),
        model_config={"label_names": list(dataset.classes), "pixguard": own},
        safe_serialization=True,
    )
    measured_on = held_out if held_out is not None else validation
    metrics = {
        "mode": config.mode,
        "base": spec.name,
        "train_samples": len(train),
        "history": history,
        **_measure(
            Classifier.load(output, runtime="torch"),
            measured_on,
            nsfw_classes,
            config,
            output,
            split="test" if held_out is not None else "validation",
        ),
    }
    write_json_atomic(output / "metrics.json", metrics)
    # A finished run needs no checkpoint; a re-run starts afresh.
    shutil.rmtree(output / "checkpoint", ignore_errors=True)
    with atomic_text_file(output / "train.log") as log:
        for row in history:
            log.write(json.dumps(row) + "\n")
    return FinetuneResult(output, metrics, history)


def _matching(other: Dataset, dataset: Dataset, role: str) -> Dataset:
    if other.classes != dataset.classes:
        raise DatasetError(
            f"{role} classes {list(other.classes)} differ from {list(dataset.classes)}"
        )
    return other


def _measure(
    trained: Classifier,
    data: Dataset,
    nsfw_classes: Sequence[str],
    config: FinetuneConfig,
    output: Path,
    *,
    split: str,
) -> dict[str, Any]:
    """Metrics of the trained model on ``data`` from one pass of inference, with the
    split they were measured on, and the PR/ROC curves."""
    predictions = trained.predict(data.paths)
    truth = nsfw_truth(data, nsfw_classes)
    scores = np.array([p.nsfw_score if p.nsfw_score is not None else np.nan for p in predictions])
    keep = np.isfinite(scores)
    labels = [
        max(p.probabilities, key=p.probabilities.__getitem__) if p.ok else None for p in predictions
    ]
    save_curves(
        truth[keep],
        scores[keep],
        output,
        threshold=config.threshold,
        title=f"{config.mode} fine-tune",
    )
    return {
        "metrics_split": split,
        "metrics_split_note": _SPLIT_NOTES[split],
        "val_samples" if split == "validation" else "test_samples": int(keep.sum()),
        **report(truth[keep], scores[keep], config.threshold),
        "class_accuracy": float(
            np.mean([label == s.label for label, s in zip(labels, data.samples, strict=True)])
        ),
    }


_SPLIT_NOTES = {
    "test": "held out: used neither for training nor for early stopping",
    "validation": (
        "the validation split, which also chose the best epoch (early stopping), so "
        "these figures are optimistic; pass a test set (--test) or run pixguard "
        "evaluate on held-out images for unbiased ones"
    ),
}
