"""Move an index to another store (FAISS folder -> Milvus, or back)."""

from __future__ import annotations

from collections.abc import Callable

from .._exceptions import IndexStoreError
from ._index import Index
from ._store import NewEntry

__all__ = ["migrate"]

#: Entries read and written per step, so memory stays flat on any index size.
MIGRATE_BATCH = 2000


def migrate(
    source: Index,
    target: Index,
    *,
    batch: int = MIGRATE_BATCH,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Copy every entry (metadata, vector, tags), the aliases and the bank threshold
    from ``source`` into ``target``; returns how many entries were added. Entries
    whose bytes ``target`` already holds are skipped, so a stopped migration can be
    rerun."""
    if source.model is None:
        raise IndexStoreError("the source index is empty", source=source.location)
    model = source.model
    added = 0
    for ids, vectors in source.iter_vectors():
        for start in range(0, len(ids), batch):
            chunk_ids = [int(i) for i in ids[start : start + batch]]
            entries = source.entries(chunk_ids)
            rows = [
                NewEntry(e.sha256, e.source, e.label, e.score, vector, e.tags)
                for entry_id, vector in zip(chunk_ids, vectors[start : start + batch], strict=True)
                if (e := entries.get(entry_id)) is not None
            ]
            added += len(target.add_entries(rows, model=model).added)
            if on_progress is not None:
                on_progress(len(rows))
    for sha256, names in source.aliases().items():
        for name in names:
            target.add_alias(sha256, name)
    target.bank_threshold = source.bank_threshold
    return added
