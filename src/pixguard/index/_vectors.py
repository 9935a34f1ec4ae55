"""FAISS structures over L2-normalised float32 vectors (inner product = cosine).

They only store and search; ids are the SQLite entry ids. A saved index is one
file named after the last entry id it holds, written under a temporary name and
renamed into place, so a reader always sees a complete file and knows which rows
to catch up from the database.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import faiss
import numpy as np

__all__ = ["INDEX_KINDS", "VectorIndex", "auto_kind"]

INDEX_KINDS = ("flat", "hnsw", "ivfpq")
#: Exact search stays fast below this many vectors; above it, HNSW.
HNSW_FROM = 50_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 64
IVFPQ_BITS = 8
IVFPQ_NPROBE = 16
_IVF_TRAIN_MIN = 10_000
_IVF_TRAIN_MAX = 100_000
_FILE = re.compile(r"^vectors-(\d+)\.faiss$")


def auto_kind(count: int) -> str:
    return "flat" if count < HNSW_FROM else "hnsw"


def normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


class VectorIndex:
    def __init__(self, index: faiss.Index, kind: str) -> None:
        self.index = index
        self.kind = kind

    @classmethod
    def create(cls, dim: int, kind: str, training: np.ndarray | None = None) -> VectorIndex:
        if kind == "flat":
            inner: faiss.Index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            inner = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            inner.hnsw.efSearch = HNSW_EF_SEARCH
        elif kind == "ivfpq":
            if training is None or len(training) < _IVF_TRAIN_MIN:
                raise ValueError(f"IVF-PQ needs at least {_IVF_TRAIN_MIN:,} vectors to train")
            training = normalise(training[:_IVF_TRAIN_MAX])
            # ~4 sqrt(n) lists, each with enough points for k-means to place it.
            nlist = max(1, min(int(4 * np.sqrt(len(training))), len(training) // 39))
            # One byte per two dimensions: 8x smaller than float32.
            subquantizers = next(m for m in range(dim // 2, 0, -1) if dim % m == 0)
            quantizer = faiss.IndexFlatIP(dim)
            inner = faiss.IndexIVFPQ(
                quantizer, dim, nlist, subquantizers, IVFPQ_BITS, faiss.METRIC_INNER_PRODUCT
            )
            inner.train(training)
            inner.nprobe = max(IVFPQ_NPROBE, nlist // 8)
        else:
            raise ValueError(f"unknown index kind {kind!r} (use {', '.join(INDEX_KINDS)})")
        return cls(faiss.IndexIDMap2(inner), kind)

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(normalise(vectors), np.asarray(ids, dtype=np.int64))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = max(1, min(k, self.count)) if self.count else 1
        if not self.count:
            empty = np.full((len(queries), 0), -1)
            return empty.astype(np.float32), empty.astype(np.int64)
        return self.index.search(normalise(queries), k)

    def remove(self, ids: list[int]) -> bool:
        """Remove ids where the structure supports it; False means search filters them."""
        if self.kind == "flat" and ids:
            self.index.remove_ids(np.asarray(ids, dtype=np.int64))
            return True
        return False

    def save(self, folder: Path, watermark: int) -> Path:
        target = folder / f"vectors-{watermark}.faiss"
        temporary = folder / f".vectors-{watermark}.faiss.tmp"
        faiss.write_index(self.index, str(temporary))
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        for old in folder.glob("vectors-*.faiss"):
            match = _FILE.match(old.name)
            if old != target and match and int(match.group(1)) < watermark:
                old.unlink(missing_ok=True)
        return target

    @classmethod
    def load_latest(cls, folder: Path, kind: str) -> tuple[VectorIndex, int] | None:
        """The newest saved index and its watermark, or None when there is none usable."""
        saved = sorted(
            (
                (int(m.group(1)), path)
                for path in folder.glob("vectors-*.faiss")
                if (m := _FILE.match(path.name))
            ),
            reverse=True,
        )
        for watermark, path in saved:
            try:
                return cls(faiss.read_index(str(path)), kind), watermark
            except RuntimeError:
                continue  # unreadable: fall back to an older file or a rebuild
        return None
