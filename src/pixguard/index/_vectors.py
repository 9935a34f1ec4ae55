"""FAISS structures over L2-normalised float32 vectors (inner product = cosine).

They only store and search; ids are the SQLite entry ids. A saved index is one
file named after the last entry id it holds, written under a temporary name and
renamed into place, so a reader always sees a complete file and knows which rows
to catch up from the database.
"""

from __future__ import annotations

import re
from pathlib import Path

import faiss
import numpy as np

from .._files import atomic_file

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
_FILE = re.compile(r"^vectors-([0-9a-f]+)-(\d+)\.faiss$")


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
            selected = np.asarray(ids, dtype=np.int64)
            self.index.remove_ids(faiss.IDSelectorBatch(selected.size, faiss.swig_ptr(selected)))
            return True
        return False

    def save(self, folder: Path, owner: str, watermark: int) -> Path:
        """Write atomically as ``vectors-<owner>-<watermark>.faiss``; ``owner`` is the
        database's own id, so a file never pairs with another database."""
        target = folder / f"vectors-{owner}-{watermark}.faiss"
        with atomic_file(target) as temporary:
            faiss.write_index(self.index, str(temporary))
        for old in folder.glob("vectors-*.faiss"):
            if old != target:
                old.unlink(missing_ok=True)
        return target

    @classmethod
    def load_latest(
        cls, folder: Path, owner: str, max_watermark: int
    ) -> tuple[VectorIndex, int] | None:
        """The newest usable saved structure of this database, and its watermark."""
        saved = sorted(
            (
                (int(m.group(2)), path)
                for path in folder.glob("vectors-*.faiss")
                if (m := _FILE.match(path.name))
                and m.group(1) == owner
                and int(m.group(2)) <= max_watermark
            ),
            reverse=True,
        )
        for watermark, path in saved:
            try:
                index = faiss.read_index(str(path))
            except RuntimeError:
                continue  # unreadable: fall back to an older file or a rebuild
            return cls(index, kind_of(index)), watermark
        return None


def kind_of(index: faiss.Index) -> str:
    """The kind of a (loaded) structure, read from the object itself."""
    inner = faiss.downcast_index(index.index if isinstance(index, faiss.IndexIDMap2) else index)
    if isinstance(inner, faiss.IndexHNSWFlat):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVFPQ):
        return "ivfpq"
    return "flat"
