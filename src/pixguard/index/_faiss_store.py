"""The one-machine store: metadata and vectors in SQLite (the source of truth), a
FAISS structure derived from them for search.

Other processes may add or remove rows at any time (a CLI beside a long-running
server). A reader looks for rows committed elsewhere at most every
:data:`REFRESH_SECONDS`, so a live known-bad bank sees new entries within that bound.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import IndexStoreError
from ._store import Entry, MetadataStore, NewEntry
from ._vectors import INDEX_KINDS, VectorIndex, auto_kind, normalise

__all__ = ["DB_NAME", "REFRESH_SECONDS", "SAVE_EVERY", "FaissStore"]

DB_NAME = "index.db"
#: Vectors added before the FAISS structure is saved again (the database is
#: always current; the saved structure only shortens the catch-up at open).
SAVE_EVERY = 20_000
#: The longest a reader goes without looking for rows other processes committed
#: (one cheap query on SQLite's id sequence and row count).
REFRESH_SECONDS = 1.0


class FaissStore:
    """Entries in ``folder/index.db``; FAISS files ``vectors-*.faiss`` beside it."""

    def __init__(self, folder: Path, *, create: bool, kind: str) -> None:
        if kind != "auto" and kind not in INDEX_KINDS:
            raise IndexStoreError(
                f"unknown index kind {kind!r} (use auto or {', '.join(INDEX_KINDS)})"
            )
        if not (folder / DB_NAME).exists():
            if not create:
                raise IndexStoreError(
                    "no index here (create one with `pixguard index add`)", source=str(folder)
                )
            folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.location = str(folder)
        self._db = MetadataStore(folder / DB_NAME)
        if kind != "auto":
            self._db.set_meta("kind", kind)
        self._requested_kind = self._db.get_meta("kind") or "auto"
        self._vectors: VectorIndex | None = None
        self._watermark = 0
        self._unsaved = 0
        self._stale_ids = False
        self._checked = 0.0
        self._seen = (0, 0)

    def close(self) -> None:
        if self._vectors is not None and self._unsaved:
            self._save()
        self._db.close()

    # -- what the index holds ----------------------------------------------------------

    def bound(self) -> tuple[str, int] | None:
        model, dim = self._db.get_meta("model"), self._db.get_meta("dim")
        return None if model is None or dim is None else (model, int(dim))

    def bind(self, model: str, dim: int) -> tuple[str, int]:
        return self._db.bind_model(model, dim)

    def get_setting(self, key: str) -> str | None:
        return self._db.get_meta(key)

    def set_setting(self, key: str, value: str) -> None:
        self._db.set_meta(key, value)

    @property
    def dim(self) -> int | None:
        bound = self.bound()
        return None if bound is None else bound[1]

    # -- entries -----------------------------------------------------------------------

    def add(self, entries: list[NewEntry], model: str) -> list[int]:
        """Commit ``entries`` (the acknowledgement), then bring the structure up to
        date from the database, which also picks up rows other processes committed."""
        ids = self._db.add(entries, model)
        if ids and self._ready() is not None:
            self._catch_up()
        return ids

    def existing_hashes(self, hashes: Iterable[str]) -> set[str]:
        return self._db.existing_hashes(hashes)

    def add_alias(self, sha256: str, source: str) -> None:
        self._db.add_alias(sha256, source)

    def aliases(self) -> dict[str, list[str]]:
        return self._db.aliases()

    def by_sha(self, hashes: Iterable[str]) -> dict[str, Entry]:
        return self._db.by_sha(hashes)

    def entries(self, ids: Iterable[int]) -> dict[int, Entry]:
        return self._db.entries(ids)

    def vector(self, entry_id: int) -> np.ndarray | None:
        return self._db.vector(entry_id, self.dim or 0)

    def iter_vectors(
        self, *, label: str | None = None, batch: int = 10_000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self._db.iter_vectors(self.dim or 0, label=label, batch=batch)

    def remove(self, ids: list[int]) -> int:
        removed = self._db.remove(ids)
        index = self._ready()
        if index is not None and not index.remove(ids):
            self._stale_ids = True
        self._unsaved += removed
        return removed

    def count(self, label: str | None = None) -> int:
        return self._db.count(label)

    def label_counts(self) -> dict[str, int]:
        return self._db.label_counts()

    def describe(self) -> dict[str, Any]:
        index = self._ready()
        return {
            "store": "faiss",
            "folder": self.location,
            "kind": index.kind if index else None,
            "vectors_in_structure": index.count if index else 0,
        }

    # -- search ------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """Live entries nearest each (normalised) query, best first."""
        index = self._ready()
        if index is None:
            return [[] for _ in range(len(queries))]
        results = []
        for query in queries:
            fetch = k if not self._stale_ids else 2 * k + 8
            while True:
                hits, exhausted = self._search_one(index, query, fetch)
                if len(hits) >= k or exhausted:
                    break
                fetch *= 4  # removed entries crowd the neighbourhood: look further
            results.append(hits[:k])
        return results

    def _search_one(
        self, index: VectorIndex, query: np.ndarray, fetch: int
    ) -> tuple[list[tuple[int, float]], bool]:
        similarities, ids = index.search(query[None], min(fetch, max(index.count, 1)))
        candidates = [int(i) for i in ids[0] if i >= 0]
        live = self._db.live_ids(candidates)
        if index.kind == "ivfpq" and candidates:
            # Compressed codes give approximate scores: rescore with the exact vectors.
            exact = self._db.vectors([i for i in candidates if i in live], self.dim or 0)
            scored = {i: float(normalise(v[None])[0] @ query) for i, v in exact.items()}
        else:
            scored = {
                int(i): float(s) for s, i in zip(similarities[0], ids[0], strict=True) if i >= 0
            }
        hits = [(i, scored[i]) for i in dict.fromkeys(candidates) if i in live and i in scored]
        hits.sort(key=lambda hit: -hit[1])
        return hits, len(candidates) < fetch or fetch >= index.count

    # -- the FAISS structure, derived from the database ------------------------------

    def _ready(self) -> VectorIndex | None:
        if self._vectors is not None:
            self._refresh()
            return self._vectors
        if self.dim is None:
            return None
        kind = self._desired_kind()
        loaded = VectorIndex.load_latest(self.folder, self._db.uuid, self._db.last_id_issued())
        if loaded is not None and loaded[0].kind == kind:
            self._vectors, self._watermark = loaded
        else:
            self._vectors, self._watermark = self._fresh(kind), 0
        self._catch_up()
        self._stale_ids = self._vectors.count != self._db.count()
        self._checked = time.monotonic()
        return self._vectors

    def _refresh(self) -> None:
        """Take in rows other processes committed (or removed) since the last look,
        at most every REFRESH_SECONDS."""
        now = time.monotonic()
        if now - self._checked < REFRESH_SECONDS:
            return
        self._checked = now
        seen = (self._db.last_id_issued(), self._db.count())
        if seen == self._seen:
            return
        self._seen = seen
        self._catch_up()
        assert self._vectors is not None
        if self._vectors.count != seen[1]:
            self._stale_ids = True  # removed elsewhere: search filters them

    def _desired_kind(self) -> str:
        return (
            self._requested_kind if self._requested_kind != "auto" else auto_kind(self._db.count())
        )

    def _fresh(self, kind: str) -> VectorIndex:
        assert self.dim is not None
        training = self._training_sample() if kind == "ivfpq" else None
        try:
            return VectorIndex.create(self.dim, kind, training)
        except ValueError as exc:
            raise IndexStoreError(str(exc), source=self.location) from exc

    def _catch_up(self) -> None:
        """Add every committed row above the watermark, ours or another process's.

        Writers are serialised by SQLite and ids grow in commit order, so rows above
        the watermark are exactly those the structure does not hold yet.
        """
        assert self._vectors is not None and self.dim is not None
        for ids, vectors in self._db.iter_vectors(self.dim, after_id=self._watermark):
            self._vectors.add(ids, vectors)
            self._watermark = int(ids[-1])
            self._unsaved += len(ids)
        if self._unsaved >= SAVE_EVERY:
            self._save()

    def _training_sample(self) -> np.ndarray:
        parts = [vectors for _, vectors in self._db.iter_vectors(self.dim or 0)]
        if not parts:
            raise IndexStoreError("an IVF-PQ index needs vectors to train on; add some first")
        return normalise(np.concatenate(parts))

    def _save(self) -> None:
        assert self._vectors is not None
        self._vectors.save(self.folder, self._db.uuid, self._watermark)
        self._unsaved = 0

    def rebuild(self, kind: str | None = None) -> None:
        """Rebuild the FAISS structure from the database (after removals, or to switch kind)."""
        if kind is not None and kind != "auto" and kind not in INDEX_KINDS:
            raise IndexStoreError(
                f"unknown index kind {kind!r} (use auto or {', '.join(INDEX_KINDS)})"
            )
        if self.dim is None:
            raise IndexStoreError("the index is empty", source=self.location)
        requested = kind or self._requested_kind
        target = requested if requested != "auto" else auto_kind(self._db.count())
        fresh = self._fresh(target)  # fails before anything is changed
        self._vectors, self._watermark, self._unsaved = fresh, 0, 0
        self._catch_up()
        self._save()
        if kind is not None:
            self._requested_kind = kind
            self._db.set_meta("kind", kind)
        self._stale_ids = False
