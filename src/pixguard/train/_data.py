"""Labelled image sets: an ImageFolder (one sub-folder per class) or a CSV/JSONL
manifest of (path, label), with stratified splits."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._exceptions import DatasetError
from ..images import IMAGE_SUFFIXES

__all__ = ["Dataset", "Sample", "load_dataset"]


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str


@dataclass(frozen=True)
class Dataset:
    samples: tuple[Sample, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.classes)}
        return np.array([index[s.label] for s in self.samples], dtype=np.int64)

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.samples]

    def subset(self, indices: np.ndarray) -> Dataset:
        return Dataset(tuple(self.samples[i] for i in indices), self.classes)

    def split(self, val_fraction: float, *, seed: int) -> tuple[Dataset, Dataset]:
        """Stratified: each class keeps the same share in train and val."""
        if not 0.0 < val_fraction < 1.0:
            raise DatasetError("the validation fraction must be between 0 and 1")
        rng = np.random.default_rng(seed)
        train: list[int] = []
        val: list[int] = []
        targets = self.targets
        for cls in range(len(self.classes)):
            members = rng.permutation(np.flatnonzero(targets == cls))
            cut = max(1, round(len(members) * val_fraction)) if len(members) > 1 else 0
            val.extend(members[:cut])
            train.extend(members[cut:])
        return self.subset(np.sort(train)), self.subset(np.sort(val))


def _from_folder(root: Path) -> list[Sample]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DatasetError("an image folder needs at least two class sub-folders", source=str(root))
    samples: list[Sample] = []
    for folder in classes:
        files = sorted(
            p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        samples.extend(Sample(path, folder.name) for path in files)
    return samples


def _from_manifest(path: Path) -> list[Sample]:
    base = path.parent
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        else:
            rows = [
                json.loads(line)
                for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read the manifest: {exc}", source=str(path)) from exc
    samples = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not row.get("path") or row.get("label") in (None, ""):
            raise DatasetError(f"row {number} needs a path and a label", source=str(path))
        file = Path(row["path"])
        samples.append(Sample(file if file.is_absolute() else base / file, str(row["label"])))
    return samples


def load_dataset(source: str | os.PathLike[str]) -> Dataset:
    """Read an ImageFolder or a ``.csv``/``.jsonl`` manifest (paths relative to it)."""
    source = Path(source)
    if source.is_dir():
        samples = _from_folder(source)
    elif source.is_file() and source.suffix.lower() in (".csv", ".jsonl"):
        samples = _from_manifest(source)
    else:
        raise DatasetError("not an image folder, nor a .csv or .jsonl manifest", source=str(source))
    classes = tuple(sorted({s.label for s in samples}))
    if len(classes) < 2:
        raise DatasetError("a dataset needs at least two classes", source=str(source))
    return Dataset(tuple(samples), classes)
