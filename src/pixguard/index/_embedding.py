"""Turning inputs into index entries: images embedded by a classifier, keyed by the
sha256 of their bytes, and embeddings computed elsewhere with their JSONL records."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .._exceptions import (
    ImageError,
    ImageNotFoundError,
    ImageUnreadableError,
    IndexStoreError,
    InferenceError,
    PixguardError,
)
from .._files import file_sha256
from ..classify import Classifier, Prediction
from ..images import ImageInput
from ._store import NewEntry
from ._vectors import normalise

__all__ = ["embedded_batches", "record_entries", "sha256_of"]

Failures = list[tuple[str, PixguardError]]


def sha256_of(source: ImageInput) -> str | None:
    """Hash of the encoded bytes, or None when the input has none (PIL, arrays)."""
    if isinstance(source, str | os.PathLike):
        try:
            return file_sha256(source)
        except OSError:
            return None
    if isinstance(source, bytes | bytearray | memoryview):
        return hashlib.sha256(source).hexdigest()
    return None


def _unreadable(source: str, exc: OSError) -> ImageError:
    """The image error for a file that cannot be read (to hash it)."""
    if isinstance(exc, FileNotFoundError):
        return ImageNotFoundError("no such file", source=source)
    return ImageUnreadableError(f"cannot read the file ({exc.strerror or exc})", source=source)


def embedded_batches(
    todo: Sequence[tuple[ImageInput, str | None]],
    classifier: Classifier,
    *,
    tags: Sequence[str],
    batch_size: int,
    on_result: Callable[[Prediction], None] | None,
    failed: Failures,
) -> Iterator[list[NewEntry]]:
    """Embed ``todo`` (each image with the sha256 of its bytes, if it has any) one
    batch at a time, yielding each batch's entries, so the caller stores each batch
    before the next is embedded. Images that fail go to ``failed``."""
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        predictions = classifier.predict([s for s, _ in chunk], batch_size=batch_size)
        entries = []
        for (_, digest), prediction in zip(chunk, predictions, strict=True):
            if on_result is not None:
                on_result(prediction)
            if prediction.error is not None:
                failed.append((prediction.source, prediction.error))
                continue
            if prediction.embedding is None:
                failed.append(
                    (
                        prediction.source,
                        InferenceError(
                            "the model gave no embedding to index", source=prediction.source
                        ),
                    )
                )
                continue
            digest = digest or hashlib.sha256(prediction.embedding.tobytes()).hexdigest()
            entries.append(
                NewEntry(
                    digest,
                    prediction.source,
                    prediction.label,
                    prediction.nsfw_score,
                    normalise(prediction.embedding[None])[0],
                    tuple(tags),
                )
            )
        yield entries


def record_entries(
    vectors: np.ndarray,
    records: Sequence[dict[str, Any]],
    *,
    tags: Sequence[str],
    failed: Failures,
) -> tuple[str | None, list[NewEntry]]:
    """The one model the records name, and an entry per row. Rows of failed inputs
    or with non-finite vectors are skipped; files that cannot be read (to hash them)
    go to ``failed``."""
    if len(vectors) != len(records):
        raise IndexStoreError(f"{len(vectors)} embeddings but {len(records)} records")
    models = {record.get("model") for record in records if not record.get("error")}
    if len(models) > 1 or None in models:
        raise IndexStoreError(
            f"the records must all name one model, got {sorted(map(str, models))}"
        )
    entries = []
    for vector, record in zip(vectors, records, strict=True):
        source = str(record.get("path"))
        if record.get("error") or not np.isfinite(vector).all():
            continue
        try:
            digest = file_sha256(source)
        except OSError as exc:
            failed.append((source, _unreadable(source, exc)))
            continue
        entries.append(
            NewEntry(
                digest,
                source,
                record.get("label"),
                record.get("nsfw_score"),
                normalise(np.asarray(vector)[None])[0],
                tuple(tags),
            )
        )
    return (str(next(iter(models))) if models else None), entries
