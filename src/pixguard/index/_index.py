"""Index: a persistent embedding index for similarity search, near-duplicates,
clustering and known-bad banks."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterable, Sequence
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
from .._files import atomic_file, file_sha256
from ..classify import Classifier, Prediction
from ..images import ImageInput, describe_source
from ._store import Entry, MetadataStore, NewEntry
from ._vectors import INDEX_KINDS, VectorIndex, auto_kind, normalise

__all__ = ["DEFAULT_BANK_THRESHOLD", "AddReport", "BankMatch", "Cluster", "Hit", "Index"]

DB_NAME = "index.db"
#: Cosine similarity above which a bank entry flags an image as a re-upload.
DEFAULT_BANK_THRESHOLD = 0.92
#: Vectors added before the FAISS structure is saved again (the database is
#: always current; the saved structure only shortens the catch-up at open).
SAVE_EVERY = 20_000


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


@dataclass(frozen=True)
class Cluster:
    id: int
    size: int
    representatives: list[Entry]
    contact_sheet: Path | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.id,
            "size": self.size,
            "representatives": [entry.to_dict() for entry in self.representatives],
            "contact_sheet": str(self.contact_sheet) if self.contact_sheet else None,
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
    """Embeddings in FAISS, metadata in SQLite (WAL), in one folder.

    Open with :meth:`open`; close (or use ``with``) to save the FAISS structure.
    An index records the model and embedding size it was built with; adding or
    searching with another is an :class:`IndexModelMismatchError`.
    """

    def __init__(self, folder: Path, store: MetadataStore, kind: str) -> None:
        self.folder = folder
        self._store = store
        self._requested_kind = kind
        self._vectors: VectorIndex | None = None
        self._watermark = 0
        self._unsaved = 0
        self._stale_ids = False

    @classmethod
    def open(
        cls, folder: str | os.PathLike[str], *, create: bool = True, kind: str = "auto"
    ) -> Index:
        """Open (or create) the index in ``folder``; ``kind`` is auto, flat, hnsw or ivfpq."""
        folder = Path(folder)
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
        store = MetadataStore(folder / DB_NAME)
        if kind != "auto":
            store.set_meta("kind", kind)
        return cls(folder, store, store.get_meta("kind") or "auto")

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._vectors is not None and self._unsaved:
            self._save()
        self._store.close()

    # -- what the index was built with --------------------------------------------------

    @property
    def model(self) -> str | None:
        return self._store.get_meta("model")

    @property
    def dim(self) -> int | None:
        value = self._store.get_meta("dim")
        return None if value is None else int(value)

    @property
    def bank_threshold(self) -> float:
        value = self._store.get_meta("bank_threshold")
        return DEFAULT_BANK_THRESHOLD if value is None else float(value)

    @bank_threshold.setter
    def bank_threshold(self, value: float) -> None:
        if not 0.0 < value <= 1.0:
            raise IndexStoreError("the bank threshold is a cosine similarity in (0, 1]")
        self._store.set_meta("bank_threshold", repr(float(value)))

    def _bind(self, model: str, dim: int) -> None:
        if self.model is None:
            self._store.set_meta("model", model)
            self._store.set_meta("dim", str(dim))
            return
        if model != self.model or dim != self.dim:
            raise IndexModelMismatchError(
                f"this index holds {self.dim}-d embeddings of {self.model!r}; "
                f"got {dim}-d embeddings of {model!r}. Use the same --model, or another index.",
                source=str(self.folder),
            )

    # -- the FAISS structure, derived from the database ------------------------------

    def _ready(self) -> VectorIndex | None:
        if self._vectors is not None:
            return self._vectors
        if self.dim is None:
            return None
        kind = self._desired_kind()
        loaded = VectorIndex.load_latest(
            self.folder, self._store.uuid, self._store.last_id_issued()
        )
        if loaded is not None and loaded[0].kind == kind:
            self._vectors, self._watermark = loaded
        else:
            self._vectors, self._watermark = self._fresh(kind), 0
        self._catch_up()
        self._stale_ids = self._vectors.count != self._store.count()
        return self._vectors

    def _desired_kind(self) -> str:
        return (
            self._requested_kind
            if self._requested_kind != "auto"
            else auto_kind(self._store.count())
        )

    def _fresh(self, kind: str) -> VectorIndex:
        assert self.dim is not None
        training = self._training_sample() if kind == "ivfpq" else None
        try:
            return VectorIndex.create(self.dim, kind, training)
        except ValueError as exc:
            raise IndexStoreError(str(exc), source=str(self.folder)) from exc

    def _catch_up(self) -> None:
        """Add every committed row above the watermark, ours or another process's.

        Writers are serialised by SQLite and ids grow in commit order, so rows above
        the watermark are exactly those the structure does not hold yet.
        """
        assert self._vectors is not None and self.dim is not None
        for ids, vectors in self._store.iter_vectors(self.dim, after_id=self._watermark):
            self._vectors.add(ids, vectors)
            self._watermark = int(ids[-1])
            self._unsaved += len(ids)
        if self._unsaved >= SAVE_EVERY:
            self._save()

    def _training_sample(self) -> np.ndarray:
        parts = [vectors for _, vectors in self._store.iter_vectors(self.dim or 0)]
        if not parts:
            raise IndexStoreError("an IVF-PQ index needs vectors to train on; add some first")
        return normalise(np.concatenate(parts))

    def _save(self) -> None:
        assert self._vectors is not None
        self._vectors.save(self.folder, self._store.uuid, self._watermark)
        self._unsaved = 0

    def rebuild(self, kind: str | None = None) -> None:
        """Rebuild the FAISS structure from the database (after removals, or to switch kind)."""
        if kind is not None and kind != "auto" and kind not in INDEX_KINDS:
            raise IndexStoreError(
                f"unknown index kind {kind!r} (use auto or {', '.join(INDEX_KINDS)})"
            )
        if self.dim is None:
            raise IndexStoreError("the index is empty", source=str(self.folder))
        requested = kind or self._requested_kind
        target = requested if requested != "auto" else auto_kind(self._store.count())
        fresh = self._fresh(target)  # fails before anything is changed
        self._vectors, self._watermark, self._unsaved = fresh, 0, 0
        self._catch_up()
        self._save()
        if kind is not None:
            self._requested_kind = kind
            self._store.set_meta("kind", kind)
        self._stale_ids = False

    # -- adding ----------------------------------------------------------------------

    def _commit(self, entries: list[NewEntry], model: str) -> list[int]:
        """Commit ``entries`` (the acknowledgement), then bring the structure up to date
        from the database, which also picks up rows other processes committed."""
        ids = self._store.add(entries, model)
        if ids and self._ready() is not None and self._vectors is not None:
            self._catch_up()
        return ids

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
        self._bind(classifier.name, classifier.embedding_dim or 0)
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
            vector = self._store.vector(int(query), self.dim or 0)
            if vector is None:
                raise IndexEntryNotFoundError(f"no entry with id {query}", source=str(self.folder))
            return vector
        if isinstance(query, np.ndarray) and query.ndim == 1:
            if self.dim is not None and query.shape[0] != self.dim:
                raise IndexModelMismatchError(
                    f"query vector has {query.shape[0]} dimensions; the index holds {self.dim}"
                )
            return query.astype(np.float32)
        if classifier is None:
            raise IndexStoreError("searching by image needs a classifier to embed it")
        if self.model is not None:
            self._bind(classifier.name, classifier.embedding_dim or 0)
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
        index = self._ready()
        if index is None:
            return [[] for _ in range(len(vectors))]
        queries = normalise(np.asarray(vectors, dtype=np.float32))
        results = []
        for query in queries:
            fetch = k if not self._stale_ids else 2 * k + 8
            while True:
                hits, exhausted = self._search_one(index, query, fetch)
                live = len(hits) >= k or exhausted
                if live:
                    break
                fetch *= 4  # removed entries crowd the neighbourhood: look further
            if min_similarity is not None:
                hits = [hit for hit in hits if hit.similarity >= min_similarity]
            results.append(hits[:k])
        return results

    def _search_one(
        self, index: VectorIndex, query: np.ndarray, fetch: int
    ) -> tuple[list[Hit], bool]:
        similarities, ids = index.search(query[None], min(fetch, max(index.count, 1)))
        candidates = [int(i) for i in ids[0] if i >= 0]
        entries = self._store.entries(candidates)
        if index.kind == "ivfpq" and candidates:
            # Compressed codes give approximate scores: rescore with the exact vectors.
            exact = self._store.vectors([i for i in candidates if i in entries], self.dim or 0)
            scored = {i: float(normalise(v[None])[0] @ query) for i, v in exact.items()}
        else:
            scored = {
                int(i): float(s) for s, i in zip(similarities[0], ids[0], strict=True) if i >= 0
            }
        hits = [
            Hit(entries[i], scored[i])
            for i in dict.fromkeys(candidates)
            if i in entries and i in scored
        ]
        hits.sort(key=lambda hit: -hit.similarity)
        return hits, len(candidates) < fetch or fetch >= index.count

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
        self._bind(first.model, int(first.embedding.shape[0]))  # checks, never binds here
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
        removed = self._store.remove(ids)
        index = self._ready()
        if index is not None and not index.remove(ids):
            self._stale_ids = True
        self._unsaved += removed
        return removed

    def stats(self) -> dict[str, Any]:
        index = self._ready()
        return {
            "folder": str(self.folder),
            "model": self.model,
            "dim": self.dim,
            "entries": self._store.count(),
            "labels": self._store.label_counts(),
            "kind": index.kind if index else None,
            "vectors_in_structure": index.count if index else 0,
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

        for ids, vectors in self._store.iter_vectors(self.dim):
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
        for sha, sources in self._store.aliases().items():
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

    def cluster(
        self,
        k: int,
        *,
        flagged_only: bool = False,
        sheets: Path | None = None,
        representatives: int = 9,
        seed: int = 0,
    ) -> list[Cluster]:
        """k-means (FAISS, spherical) over all entries, or only those labelled nsfw."""
        import faiss

        if self.dim is None:
            raise IndexStoreError("the index is empty")
        label = "nsfw" if flagged_only else None
        parts = list(self._store.iter_vectors(self.dim, label=label))
        if not parts:
            raise IndexStoreError(
                "no entries to cluster" + (" (none flagged nsfw)" if flagged_only else "")
            )
        ids = np.concatenate([p[0] for p in parts])
        vectors = normalise(np.concatenate([p[1] for p in parts]))
        k = max(1, min(k, len(ids)))
        kmeans = faiss.Kmeans(
            self.dim,
            k,
            niter=25,
            spherical=True,
            seed=seed,
            verbose=False,
            min_points_per_centroid=1,
        )
        kmeans.train(vectors)
        centroids = kmeans.centroids
        if centroids is None:
            raise IndexStoreError("k-means produced no centroids", source=str(self.folder))
        _, assignment = kmeans.index.search(vectors, 1)
        clusters = []
        for cluster_id in range(k):
            members = np.flatnonzero(assignment[:, 0] == cluster_id)
            if not len(members):
                continue
            closeness = vectors[members] @ centroids[cluster_id]
            chosen = ids[members[np.argsort(-closeness)[:representatives]]]
            entries = self._store.entries(int(i) for i in chosen)
            ordered = [entries[int(i)] for i in chosen if int(i) in entries]
            sheet = (
                _contact_sheet(ordered, sheets / f"cluster-{cluster_id:03d}.png")
                if sheets
                else None
            )
            clusters.append(Cluster(cluster_id, len(members), ordered, sheet))
        return sorted(clusters, key=lambda c: -c.size)


_THUMB = 160


def _contact_sheet(entries: list[Entry], path: Path) -> Path | None:
    """A grid of thumbnails of the entries whose source files can still be read."""
    from PIL import Image, ImageDraw

    from ..images import DecodeLimits, load_image

    thumbs = []
    for entry in entries:
        if not entry.source:
            continue
        try:
            frame = load_image(
                entry.source, limits=DecodeLimits(), min_size=(_THUMB, _THUMB)
            ).frames[0]
        except ImageError:
            continue
        frame.thumbnail((_THUMB, _THUMB))
        thumbs.append((entry, frame))
    if not thumbs:
        return None
    columns = math.ceil(math.sqrt(len(thumbs)))
    rows = math.ceil(len(thumbs) / columns)
    sheet = Image.new("RGB", (columns * (_THUMB + 8), rows * (_THUMB + 24)), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for position, (entry, thumb) in enumerate(thumbs):
        x, y = (position % columns) * (_THUMB + 8) + 4, (position // columns) * (_THUMB + 24) + 4
        sheet.paste(thumb, (x + (_THUMB - thumb.width) // 2, y + (_THUMB - thumb.height) // 2))
        draw.text((x, y + _THUMB + 4), f"#{entry.id} {entry.label or ''}", fill=(230, 230, 230))
    with atomic_file(path) as temporary:
        sheet.save(temporary, format="PNG")
    return path
