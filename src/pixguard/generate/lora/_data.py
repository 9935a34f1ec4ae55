"""LoRA training data: captioned images from a folder or a manifest, their safety
screening, and aspect-ratio buckets with a seeded, resumable batch order."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..._exceptions import DatasetError, FlaggedTrainingDataError
from ...classify import Classifier
from ...images import SUPPORTED_FORMATS

__all__ = [
    "BatchPlan",
    "CaptionedImage",
    "ScreeningReport",
    "load_captioned_images",
    "nearest_bucket",
    "screen_images",
]

logger = logging.getLogger("pixguard.generate")
_CAPTION_SUFFIX = ".txt"
_MANIFEST_SUFFIXES = (".jsonl", ".csv")


@dataclass(frozen=True)
class CaptionedImage:
    path: Path
    caption: str


def _image_suffixes() -> frozenset[str]:
    """The file suffixes of the formats pixguard decodes, from Pillow's own table."""
    from PIL import Image

    return frozenset(
        suffix for suffix, fmt in Image.registered_extensions().items() if fmt in SUPPORTED_FORMATS
    )


def load_captioned_images(source: str | os.PathLike[str]) -> list[CaptionedImage]:
    """Images with captions: a folder where each image has a ``.txt`` caption beside
    it (``cat.png`` + ``cat.txt``), or a JSONL/CSV manifest with ``image`` and
    ``caption`` fields (image paths relative to the manifest)."""
    path = Path(source)
    if path.is_dir():
        items = _from_folder(path)
    elif path.is_file() and path.suffix.lower() in _MANIFEST_SUFFIXES:
        items = _from_manifest(path)
    else:
        raise DatasetError(
            "training data must be a folder of images with .txt captions, or a .jsonl/.csv "
            "manifest with image and caption fields",
            source=str(path),
        )
    if not items:
        raise DatasetError("no captioned images found", source=str(path))
    return items


def _from_folder(folder: Path) -> list[CaptionedImage]:
    suffixes = _image_suffixes()
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    missing = [p for p in images if not p.with_suffix(_CAPTION_SUFFIX).is_file()]
    if missing:
        names = ", ".join(str(p) for p in missing)
        raise DatasetError(
            f"images without a {_CAPTION_SUFFIX} caption: {names}", source=str(folder)
        )
    return [CaptionedImage(p, _caption(p.with_suffix(_CAPTION_SUFFIX))) for p in images]


def _caption(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"unreadable caption: {exc}", source=str(path)) from exc
    if not text:
        raise DatasetError("the caption is empty", source=str(path))
    return text


def _from_manifest(manifest: Path) -> list[CaptionedImage]:
    try:
        with manifest.open(encoding="utf-8", newline="") as handle:
            if manifest.suffix.lower() == ".csv":
                rows: list[Any] = list(csv.DictReader(handle))
            else:
                rows = [json.loads(line) for line in handle if line.strip()]
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise DatasetError(f"unreadable manifest: {exc}", source=str(manifest)) from exc
    items = []
    for number, row in enumerate(rows, start=1):
        if (
            not isinstance(row, dict)
            or not row.get("image")
            or not str(row.get("caption") or "").strip()
        ):
            raise DatasetError(
                f"row {number} needs non-empty image and caption fields", source=str(manifest)
            )
        image = manifest.parent / str(row["image"])
        if not image.is_file():
            raise DatasetError(f"row {number}: no such image {image}", source=str(manifest))
        items.append(CaptionedImage(image, str(row["caption"]).strip()))
    return items


@dataclass(frozen=True)
class ScreeningReport:
    """Every training image's nsfw score under the safety model (None: not scored)."""

    model: str
    threshold: float
    scores: dict[str, float | None]
    flagged: list[tuple[str, float | None]]
    allowed_flagged: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "safety_model": self.model,
            "threshold": self.threshold,
            "allowed_flagged": self.allowed_flagged,
            "flagged": [{"image": path, "nsfw_score": score} for path, score in self.flagged],
            "scores": self.scores,
        }


def screen_images(
    items: Sequence[CaptionedImage], classifier: Classifier, *, allow_flagged: bool = False
) -> ScreeningReport:
    """Classify every training image. Images scored at or above the threshold, and
    images that could not be scored (the screen fails closed), are refused with a
    :class:`FlaggedTrainingDataError` naming each file, unless ``allow_flagged``."""
    scores: dict[str, float | None] = {}
    flagged: list[tuple[str, float | None]] = []
    for item, prediction in zip(
        items, classifier.predict([item.path for item in items]), strict=True
    ):
        score = prediction.nsfw_score if prediction.ok else None
        if score is not None and not math.isfinite(score):
            score = None
        scores[str(item.path)] = score
        if score is None or score >= classifier.threshold:
            flagged.append((str(item.path), score))
    report = ScreeningReport(classifier.name, classifier.threshold, scores, flagged, allow_flagged)
    if flagged and not allow_flagged:
        raise FlaggedTrainingDataError(
            f"the safety model {classifier.name} (threshold {classifier.threshold}) flagged "
            f"{len(flagged)} of {len(items)} training images; remove them, or pass "
            "--allow-flagged to train on them anyway",
            flagged=flagged,
        )
    if flagged:
        logger.warning(
            "TRAINING ON FLAGGED IMAGES (--allow-flagged): %d of %d images were flagged by %s: %s",
            len(flagged),
            len(items),
            classifier.name,
            ", ".join(path for path, _ in flagged),
        )
    return report


def nearest_bucket(width: int, height: int, resolution: int, divisibility: int) -> tuple[int, int]:
    """The (height, width) aspect-ratio bucket for an image, from diffusers' bucket
    ladder around ``resolution`` squared pixels."""
    from diffusers.training_utils import find_nearest_bucket, generate_aspect_ratio_buckets

    buckets = generate_aspect_ratio_buckets(resolution, divisibility=divisibility)
    return buckets[find_nearest_bucket(height, width, buckets)]


class BatchPlan:
    """Which items make up each micro-batch. Every batch holds items of one bucket;
    each epoch shuffles with a seed of its own, so batch ``n`` is the same in a
    resumed run as in an uninterrupted one."""

    def __init__(self, buckets: Sequence[tuple[int, int]], batch_size: int, seed: int) -> None:
        self._groups: dict[tuple[int, int], list[int]] = {}
        for index, bucket in enumerate(buckets):
            self._groups.setdefault(bucket, []).append(index)
        self._batch_size = batch_size
        self._seed = seed
        self._epochs: dict[int, list[list[int]]] = {}
        self.batches_per_epoch = sum(
            math.ceil(len(group) / batch_size) for group in self._groups.values()
        )

    def _epoch(self, epoch: int) -> list[list[int]]:
        if epoch not in self._epochs:
            rng = random.Random(f"{self._seed}:{epoch}")
            batches = []
            for bucket in sorted(self._groups):
                members = list(self._groups[bucket])
                rng.shuffle(members)
                batches += [
                    members[i : i + self._batch_size]
                    for i in range(0, len(members), self._batch_size)
                ]
            rng.shuffle(batches)
            self._epochs = {epoch: batches}  # only the current epoch is kept
        return self._epochs[epoch]

    def batch(self, number: int) -> list[int]:
        """The items of micro-batch ``number`` (counted from 0 over the whole run)."""
        epoch, position = divmod(number, self.batches_per_epoch)
        return self._epoch(epoch)[position]
