"""Index stores: the interface every one implements (FAISS + SQLite, or Milvus), and
opening the one a location names.

A store keeps entries (metadata and a normalised vector each) durably and searches
them by cosine similarity; :class:`~pixguard.index.Index` adds everything else
(embedding images, banks, dedupe) once, over any store.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .._exceptions import IndexStoreError
from ._faiss_store import FaissStore
from ._milvus_connection import MILVUS_PREFIX
from ._milvus_store import MilvusStore
from ._store import Entry, NewEntry

__all__ = ["IndexStore", "open_store"]


class IndexStore(Protocol):
    location: str

    def close(self) -> None: ...

    def bound(self) -> tuple[str, int] | None:
        """The model and embedding size recorded, or None while the index is empty."""
        ...

    def bind(self, model: str, dim: int) -> tuple[str, int]:
        """Record ``model``/``dim`` unless some are recorded (one atomic step); return
        what is recorded."""
        ...

    def get_setting(self, key: str) -> str | None: ...

    def set_setting(self, key: str, value: str) -> None: ...

    def add(self, entries: list[NewEntry], model: str) -> list[int]:
        """Store durably before returning (the acknowledgement); known sha256s are not
        added again, and their other names become aliases. Returns the new ids."""
        ...

    def existing_hashes(self, hashes: Iterable[str]) -> set[str]: ...

    def add_alias(self, sha256: str, source: str) -> None: ...

    def aliases(self) -> dict[str, list[str]]: ...

    def by_sha(self, hashes: Iterable[str]) -> dict[str, Entry]: ...

    def entries(self, ids: Iterable[int]) -> dict[int, Entry]: ...

    def vector(self, entry_id: int) -> np.ndarray | None: ...

    def iter_vectors(
        self, *, label: str | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """(id, cosine similarity) of the live entries nearest each normalised query."""
        ...

    def remove(self, ids: list[int]) -> int: ...

    def count(self, label: str | None = None) -> int: ...

    def label_counts(self) -> dict[str, int]: ...

    def describe(self) -> dict[str, Any]: ...

    def rebuild(self, kind: str | None = None) -> None: ...


def open_store(location: str | os.PathLike[str], *, create: bool, kind: str) -> IndexStore:
    """The store at ``location``: Milvus for ``milvus:`` locations, else a FAISS
    folder; ``kind`` (auto, flat, hnsw or ivfpq) applies to FAISS folders."""
    text = os.fspath(location)
    if text.startswith(MILVUS_PREFIX):
        if kind != "auto":
            raise IndexStoreError(
                "--kind applies to FAISS folders; Milvus chooses its own index", source=text
            )
        return MilvusStore(text, create=create)
    return FaissStore(Path(text), create=create, kind=kind)
