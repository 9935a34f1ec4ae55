"""Index: a persistent embedding index for similarity search, near-duplicates,
clustering and known-bad banks, over any store."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import IndexEntryNotFoundError, IndexModelMismatchError, IndexStoreError
from ..classify import Classifier, Prediction
from ..images import ImageInput, describe_source
from ._analysis import exact_duplicates, near_duplicates
from ._banks import DEFAULT_BANK_THRESHOLD, BankMatch, BankQuery
from ._embedding import embedded_batches, record_entries, sha256_of
from ._results import AddReport, Hit
from ._store import Entry, NewEntry
from ._stores import IndexStore, open_store
from ._vectors import normalise

__all__ = ["Index"]


class Index:
    """A persistent embedding index over one of two stores, chosen by location:

    - a folder: FAISS + SQLite on this machine;
    - ``milvus:PATH.db``: an embedded Milvus Lite file;
    - ``milvus://HOST:PORT/COLLECTION``: a Milvus server or cluster (token from
      ``PIXGUARD_MILVUS_TOKEN``).

    Open with :meth:`open`; close (or use ``with``). An index records the model and
    embedding size it was built with; adding or searching with another is an
    :class:`IndexModelMismatchError`.
    """

    def __init__(self, store: IndexStore) -> None:
        self._store = store

    @classmethod
    def open(
        cls, location: str | os.PathLike[str], *, create: bool = True, kind: str = "auto"
    ) -> Index:
        """Open (or create) the index at ``location``; ``kind`` (auto, flat, hnsw or
        ivfpq) applies to FAISS folders."""
        return cls(open_store(location, create=create, kind=kind))

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._store.close()

    @property
    def location(self) -> str:
        return self._store.location

    @property
    def folder(self) -> Path | None:
        """The folder of a FAISS index (None for Milvus)."""
        return getattr(self._store, "folder", None)

    # -- what the index was built with --------------------------------------------------

    @property
    def model(self) -> str | None:
        bound = self._store.bound()
        return None if bound is None else bound[0]

    @property
    def dim(self) -> int | None:
        bound = self._store.bound()
        return None if bound is None else bound[1]

    @property
    def bank_threshold(self) -> float:
        value = self._store.get_setting("bank_threshold")
        return DEFAULT_BANK_THRESHOLD if value is None else float(value)

    @bank_threshold.setter
    def bank_threshold(self, value: float) -> None:
        if not 0.0 < value <= 1.0:
            raise IndexStoreError("the bank threshold is a cosine similarity in (0, 1]")
        self._store.set_setting("bank_threshold", repr(float(value)))

    def _bind(self, model: str, dim: int) -> None:
        """Record ``model``/``dim`` if the index has none (atomically, in the store),
        else check them against what it holds."""
        held_model, held_dim = self._store.bind(model, dim)
        if model != held_model or dim != held_dim:
            raise IndexModelMismatchError(
                f"this index holds {held_dim}-d embeddings of {held_model!r}; "
                f"got {dim}-d embeddings of {model!r}. Use the same --model, or another index.",
                source=self.location,
            )

    def _check(self, model: str, dim: int) -> None:
        """Like :meth:`_bind`, but never records: for searching."""
        bound = self._store.bound()
        if bound is not None and (model, dim) != bound:
            self._bind(model, dim)  # raises the mismatch with its message

    def rebuild(self, kind: str | None = None) -> None:
        """Rebuild the FAISS structure from the database (after removals, or to switch
        kind). Milvus maintains its own index."""
        self._store.rebuild(kind)

    # -- adding ----------------------------------------------------------------------

    def _commit(self, entries: list[NewEntry], model: str) -> list[int]:
        return self._store.add(entries, model)

    def add_entries(self, entries: Sequence[NewEntry], *, model: str) -> AddReport:
        """Add embeddings computed elsewhere (a scan, another index), each with the
        sha256 of its bytes; ``model`` must be the index's model."""
        report = AddReport()
        if not entries:
            return report
        dims = {int(np.asarray(entry.vector).shape[0]) for entry in entries}
        if len(dims) != 1:
            raise IndexStoreError(f"the vectors have several sizes: {sorted(dims)}")
        self._bind(model, dims.pop())
        prepared = [
            NewEntry(e.sha256, e.source, e.label, e.score, normalise(e.vector[None])[0], e.tags)
            for e in entries
        ]
        report.added.extend(self._commit(prepared, model))
        report.duplicates = len(prepared) - len(report.added)
        return report

    def add_images(
        self,
        sources: Sequence[ImageInput],
        classifier: Classifier,
        *,
        tags: Sequence[str] = (),
        batch_size: int = 16,
        on_result: Callable[[Prediction], None] | None = None,
    ) -> AddReport:
        """Embed and add images; bytes already in the index are not embedded again."""
        self._bind(classifier.name, classifier.embedding_dim)
        report = AddReport()
        hashes = [sha256_of(source) for source in sources]
        known = self._store.existing_hashes(h for h in hashes if h)
        todo = []
        for source, digest in zip(sources, hashes, strict=True):
            if digest in known:
                report.duplicates += 1
                self._store.add_alias(digest, describe_source(source))
            else:
                todo.append((source, digest))
        for entries in embedded_batches(
            todo,
            classifier,
            tags=tags,
            batch_size=batch_size,
            on_result=on_result,
            failed=report.failed,
        ):
            ids = self._commit(entries, classifier.name)
            report.added.extend(ids)
            report.duplicates += len(entries) - len(ids)
        return report

    def add_embeddings(
        self, vectors: np.ndarray, records: Sequence[dict[str, Any]], *, tags: Sequence[str] = ()
    ) -> AddReport:
        """Add precomputed embeddings, e.g. ``classify --embeddings E.npy -f jsonl``.

        ``records`` are the JSONL objects in the same order (``path``, ``model``,
        ``label``, ``nsfw_score``, ``error``); rows of failed inputs are skipped.
        """
        report = AddReport()
        model, entries = record_entries(vectors, records, tags=tags, failed=report.failed)
        if model is not None and entries:
            self._bind(model, int(vectors.shape[1]))
            ids = self._commit(entries, model)
            report.added.extend(ids)
            report.duplicates = len(entries) - len(ids)
        return report

    # -- searching -------------------------------------------------------------------

    def _query_vector(
        self, query: int | np.ndarray | ImageInput, classifier: Classifier | None
    ) -> np.ndarray:
        if isinstance(query, int | np.integer):
            vector = self._store.vector(int(query))
            if vector is None:
                raise IndexEntryNotFoundError(f"no entry with id {query}", source=self.location)
            return vector
        if isinstance(query, np.ndarray) and query.ndim == 1:
            if self.dim is not None and query.shape[0] != self.dim:
                raise IndexModelMismatchError(
                    f"query vector has {query.shape[0]} dimensions; the index holds {self.dim}"
                )
            return query.astype(np.float32)
        if classifier is None:
            raise IndexStoreError("searching by image needs a classifier to embed it")
        self._check(classifier.name, classifier.embedding_dim)
        prediction = classifier.classify(query)
        assert prediction.embedding is not None
        return prediction.embedding

    def search(
        self,
        query: int | np.ndarray | ImageInput,
        *,
        k: int = 10,
        min_similarity: float | None = None,
        classifier: Classifier | None = None,
    ) -> list[Hit]:
        """Nearest entries to an entry id, a vector, or an image (embedded by ``classifier``)."""
        return self.search_vectors(
            self._query_vector(query, classifier)[None], k=k, min_similarity=min_similarity
        )[0]

    def search_vectors(
        self, vectors: np.ndarray, *, k: int = 10, min_similarity: float | None = None
    ) -> list[list[Hit]]:
        queries = normalise(np.asarray(vectors, dtype=np.float32))
        found = self._store.search(queries, k) if len(queries) else []
        entries = self._store.entries({i for hits in found for i, _ in hits})
        results = []
        for hits in found:
            live = [Hit(entries[i], similarity) for i, similarity in hits if i in entries]
            if min_similarity is not None:
                live = [hit for hit in live if hit.similarity >= min_similarity]
            results.append(live[:k])
        return results

    def match(
        self, predictions: Sequence[Prediction], *, threshold: float | None = None
    ) -> list[BankMatch]:
        """Use this index as a known-bad bank: the nearest entry to each prediction's
        embedding, flagged when at least ``threshold`` (default: the bank's own)
        similar, whatever the classifier's score."""
        threshold = self.bank_threshold if threshold is None else threshold
        query = BankQuery(predictions)
        if not query.positions or self.model is None:
            # an empty bank matches nothing, and stays unbound
            return query.unmatched(threshold)
        self._check(query.model, query.dim)
        return query.results(self.search_vectors(query.vectors(), k=1), threshold)

    # -- maintenance -----------------------------------------------------------------

    def remove(self, ids: Iterable[int]) -> int:
        """Remove entries; returns how many existed."""
        ids = sorted({int(i) for i in ids})
        return self._store.remove(ids)

    def entries(self, ids: Iterable[int]) -> dict[int, Entry]:
        """Entries by id (ids that do not exist are left out)."""
        return self._store.entries(ids)

    def aliases(self) -> dict[str, list[str]]:
        """Other names under which known bytes were added: sha256 -> names."""
        return self._store.aliases()

    def add_alias(self, sha256: str, source: str) -> None:
        self._store.add_alias(sha256, source)

    def iter_vectors(self, *, label: str | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of every entry, or those with ``label``, in batches."""
        return self._store.iter_vectors(label=label)

    def stats(self) -> dict[str, Any]:
        return {
            **self._store.describe(),
            "model": self.model,
            "dim": self.dim,
            "entries": self._store.count(),
            "labels": self._store.label_counts(),
            "bank_threshold": self.bank_threshold,
        }

    def dedupe(self, threshold: float = 0.95, *, neighbours: int = 16) -> list[dict[str, Any]]:
        """Groups of near-duplicates (cosine >= ``threshold``), plus exact duplicates
        (the same bytes added under several names)."""
        if self.dim is None:
            return []
        return near_duplicates(self, threshold, neighbours=neighbours) + exact_duplicates(
            self.aliases(), self._store.by_sha
        )
