"""Analysis over an index's embeddings: near and exact duplicates, clusters and their
contact sheets.

It reads entries and vectors through the part of the :class:`Index` API that
:class:`SearchableIndex` names (and a store's lookup by sha256, for exact
duplicates), so it works the same over every store.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np

from .._exceptions import ImageError, IndexStoreError
from .._files import atomic_file
from ._results import Hit
from ._store import Entry
from ._vectors import normalise

__all__ = [
    "Cluster",
    "SearchableIndex",
    "cluster",
    "contact_sheet",
    "exact_duplicates",
    "near_duplicates",
]


class SearchableIndex(Protocol):
    """What the analyses read of an :class:`Index` (declared here, since the Index
    itself calls into this module)."""

    @property
    def location(self) -> str: ...

    @property
    def dim(self) -> int | None: ...

    def iter_vectors(
        self, *, label: str | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    def search_vectors(
        self, vectors: np.ndarray, *, k: int = 10, min_similarity: float | None = None
    ) -> list[list[Hit]]: ...

    def entries(self, ids: Iterable[int]) -> dict[int, Entry]: ...


def near_duplicates(
    index: SearchableIndex, threshold: float, *, neighbours: int
) -> list[dict[str, Any]]:
    """Groups of entries joined by cosine similarity >= ``threshold``, looking among
    each entry's ``neighbours`` nearest."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for ids, vectors in index.iter_vectors():
        for entry_id, hits in zip(
            ids,
            index.search_vectors(vectors, k=neighbours, min_similarity=threshold),
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
            entries = index.entries(members)
            result.append(
                {"kind": "near", "entries": [entries[i].to_dict() for i in sorted(entries)]}
            )
    return result


def exact_duplicates(
    aliases: dict[str, list[str]], by_sha: Callable[[Iterable[str]], dict[str, Entry]]
) -> list[dict[str, Any]]:
    """The entries whose bytes were also added under other names (``aliases``:
    sha256 -> names), each found with ``by_sha``."""
    result = []
    for sha, sources in aliases.items():
        entry = by_sha([sha]).get(sha)
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


def cluster(
    index: SearchableIndex,
    k: int,
    *,
    flagged_only: bool = False,
    sheets: Path | None = None,
    representatives: int = 9,
    seed: int = 0,
) -> list[Cluster]:
    """k-means (FAISS, spherical) over all entries of ``index``, or only those
    labelled nsfw; with ``sheets``, a contact sheet PNG per cluster there."""
    dim = index.dim
    if dim is None:
        raise IndexStoreError("the index is empty", source=index.location)
    label = "nsfw" if flagged_only else None
    parts = list(index.iter_vectors(label=label))
    if not parts:
        raise IndexStoreError(
            "no entries to cluster" + (" (none flagged nsfw)" if flagged_only else "")
        )
    ids = np.concatenate([p[0] for p in parts])
    vectors = normalise(np.concatenate([p[1] for p in parts]))
    k = max(1, min(k, len(ids)))
    kmeans = faiss.Kmeans(
        dim,
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
        raise IndexStoreError("k-means produced no centroids")
    _, assignment = kmeans.index.search(vectors, 1)
    clusters = []
    for cluster_id in range(k):
        members = np.flatnonzero(assignment[:, 0] == cluster_id)
        if not len(members):
            continue
        closeness = vectors[members] @ centroids[cluster_id]
        chosen = ids[members[np.argsort(-closeness)[:representatives]]]
        entries = index.entries(int(i) for i in chosen)
        ordered = [entries[int(i)] for i in chosen if int(i) in entries]
        sheet = contact_sheet(ordered, sheets / f"cluster-{cluster_id:03d}.png") if sheets else None
        clusters.append(Cluster(cluster_id, len(members), ordered, sheet))
    return sorted(clusters, key=lambda c: -c.size)


_THUMB = 160


def contact_sheet(entries: list[Entry], path: Path) -> Path | None:
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
