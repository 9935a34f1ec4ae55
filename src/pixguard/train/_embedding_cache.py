"""Backbone embeddings of a dataset, computed once and cached in SQLite, so linear
probe re-runs and sweeps skip the backbone entirely."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._exceptions import DatasetError
from .._files import file_sha256
from .._sqlite import connect, transaction
from ..classify import Classifier
from ..runtimes import cache_root
from ._config import Progress
from ._data import Dataset

__all__ = ["EmbeddingCache", "dataset_embeddings"]

#: Progress is reported every this many images.
_PROGRESS_EVERY = 16


class EmbeddingCache:
    """Embeddings keyed by (model weights digest, file sha256) in SQLite."""

    def __init__(self, path: Path) -> None:
        self._db = connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (model TEXT, sha256 TEXT, vector BLOB, PRIMARY KEY (model, sha256))"
        )

    def get(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found = {}
        for digest in set(hashes):
            row = self._db.execute(
                "SELECT vector FROM embeddings WHERE model = ? AND sha256 = ?", (model, digest)
            ).fetchone()
            if row is not None:
                found[digest] = np.frombuffer(row[0], dtype=np.float32).copy()
        return found

    def put(self, model: str, items: dict[str, np.ndarray]) -> None:
        with transaction(self._db):
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                [(model, d, v.astype(np.float32).tobytes()) for d, v in items.items()],
            )

    def close(self) -> None:
        self._db.close()


def _sha256(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None  # unreadable: skipped like any bad image


def dataset_embeddings(
    classifier: Classifier, dataset: Dataset, model_key: str, progress: Progress | None
) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, kept sample indices): cached ones are reused, the rest computed once."""
    cache = EmbeddingCache(cache_root() / "embeddings.db")
    try:
        hashes = [_sha256(path) for path in dataset.paths]
        known = cache.get(model_key, [h for h in hashes if h])
        missing = [i for i, h in enumerate(hashes) if h and h not in known]
        fresh: dict[str, np.ndarray] = {}
        for done, (i, prediction) in enumerate(
            zip(missing, classifier.iter_predict([dataset.paths[i] for i in missing]), strict=True)
        ):
            digest = hashes[i]
            if digest is not None and prediction.ok and prediction.embedding is not None:
                fresh[digest] = prediction.embedding
            if progress and done % _PROGRESS_EVERY == 0:
                progress({"stage": "embedding", "done": done, "total": len(missing)})
        if fresh:
            cache.put(model_key, fresh)
        known.update(fresh)
    finally:
        cache.close()
    kept_hashes = [(i, h) for i, h in enumerate(hashes) if h is not None and h in known]
    if not kept_hashes:
        raise DatasetError("no image of the dataset could be read")
    kept = np.array([i for i, _ in kept_hashes], dtype=np.int64)
    return np.stack([known[h] for _, h in kept_hashes]), kept
