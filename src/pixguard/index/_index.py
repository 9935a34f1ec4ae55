"""Index: a persistent embedding index for similarity search, near-duplicates,
clustering and known-bad banks."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import (
    ImageError,
    ImageNotFoundError,
    ImageUnreadableError,
    IndexEntryNotFoundError,
    IndexModelMismatchError,
    IndexStoreError,
    InferenceError,
    PixguardError,
)
from .._files import file_sha256
from ..classify import Classifier, Prediction
from ..images import ImageInput, describe_source
from ._faiss_store import FaissStore
from ._milvus_connection import MILVUS_PREFIX
from ._milvus_store import MilvusStore
from ._store import Entry, NewEntry
from ._stores import IndexStore
from ._vectors import normalise

__all__ = ["DEFAULT_BANK_THRESHOLD", "MILVUS_PREFIX", "AddReport", "BankMatch", "Hit", "Index"]

#: Cosine similarity above which a bank entry flags an image as a re-upload.
DEFAULT_BANK_THRESHOLD = 0.92


@dataclass(frozen=True)
class Hit:
    entry: Entry
    similarity: float

    def to_dict(self) -> dict[str, Any]:
        return {"similarity": self.similarity, **self.entry.to_dict()}


@dataclass(frozen=True)
class BankMatch:
    """The nearest known-bad entry to one image, and whether it counts as a match."""

    nearest: Hit | None
    threshold: float

    @property
    def matched(self) -> bool:
        return self.nearest is not None and self.nearest.similarity >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        nearest = self.nearest
        return {
            "bank_match": self.matched,
            "bank_nearest": None
            if nearest is None
            else {
                "id": nearest.entry.id,
                "similarity": nearest.similarity,
                "source": nearest.entry.source,
            },
        }


@dataclass
class AddReport:
    added: list[int] = field(default_factory=list)
    duplicates: int = 0
    failed: list[tuple[str, PixguardError]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": len(self.added),
            "duplicates": self.duplicates,
            "failed": [{"source": s, **e.to_dict()} for s, e in self.failed],
        }


def _sha256_of(source: ImageInput) -> str | None:
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
        text = os.fspath(location)
        if text.startswith(MILVUS_PREFIX):
            if kind != "auto":
                raise IndexStoreError(
                    "--kind applies to FAISS folders; Milvus chooses its own index", source=text
                )
            return cls(MilvusStore(text, create=create))
        return cls(FaissStore(Path(text), create=create, kind=kind))

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
        hashes = [_sha256_of(source) for source in sources]
        known = self._store.existing_hashes(h for h in hashes if h)
        todo = []
        for source, digest in zip(sources, hashes, strict=True):
            if digest in known:
                report.duplicates += 1
                self._store.add_alias(digest, describe_source(source))
            else:
                todo.append((source, digest))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            predictions = classifier.predict([s for s, _ in chunk], batch_size=batch_size)
            entries = []
            for (_, digest), prediction in zip(chunk, predictions, strict=True):
                if on_result is not None:
                    on_result(prediction)
                if prediction.error is not None:
                    report.failed.append((prediction.source, prediction.error))
                    continue
                if prediction.embedding is None:
                    report.failed.append(
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
        if len(vectors) != len(records):
            raise IndexStoreError(f"{len(vectors)} embeddings but {len(records)} records")
        report = AddReport()
        entries = []
        models = {record.get("model") for record in records if not record.get("error")}
        if len(models) > 1 or None in models:
            raise IndexStoreError(
                f"the records must all name one model, got {sorted(map(str, models))}"
            )
        for vector, record in zip(vectors, records, strict=True):
            source = str(record.get("path"))
            if record.get("error") or not np.isfinite(vector).all():
                continue
            try:
                digest = file_sha256(source)
            except OSError as exc:
                report.failed.append((source, _unreadable(source, exc)))
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
        if entries:
            model = str(next(iter(models)))
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
        usable = [i for i, p in enumerate(predictions) if p.ok and p.embedding is not None]
        results = [BankMatch(None, threshold) for _ in predictions]
        if not usable or self.model is None:
            return results  # an empty bank matches nothing, and stays unbound
        first = predictions[usable[0]]
        assert first.embedding is not None
        self._check(first.model, int(first.embedding.shape[0]))
        vectors = np.stack(
            [p.embedding for i in usable if (p := predictions[i]).embedding is not None]
        )
        for position, hits in zip(usable, self.search_vectors(vectors, k=1), strict=True):
            results[position] = BankMatch(hits[0] if hits else None, threshold)
        return results

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
        parent: dict[int, int] = {}

        def find(x: int) -> int:
            while parent.setdefault(x, x) != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for ids, vectors in self._store.iter_vectors():
            for entry_id, hits in zip(
                ids,
                self.search_vectors(vectors, k=neighbours, min_similarity=threshold),
                strict=True,
            ):
                for hit in hits:
                    if hit.entry.id != entry_id:
                        parent[find(int(entry_id))] = find(hit.entry.id)
        groups: dict[int, list[int]] = {}
        for member in parent:
            groups.setdefault(find(member), []).append(member)
        result = []
        for members in groups.values():
            if len(members) > 1:
                entries = self._store.entries(members)
                result.append(
                    {"kind": "near", "entries": [entries[i].to_dict() for i in sorted(entries)]}
                )
        for sha, sources in self.aliases().items():
            entry = self._store.by_sha([sha]).get(sha)
            if entry is not None:
                result.append(
                    {
                        "kind": "exact",
                        "sha256": sha,
                        "entries": [entry.to_dict()],
                        "also_added_as": sources,
                    }
                )
        return result
