"""Bulk-load a scan's embeddings into an index (FAISS folder or Milvus)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads

from .._exceptions import ScanError
from ..index import Index, NewEntry
from ._output import part_files

__all__ = ["load_into_index"]

#: Rows read from the Parquet dataset and added per step (memory stays flat).
LOAD_BATCH = 4096
_COLUMNS = ["path", "sha256", "label", "nsfw_score", "embedding", "model"]


def load_into_index(
    output: str | Path,
    location: str,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Add every classified row of the scan in ``output`` to the index at
    ``location``; returns how many entries were new. Bytes the index already holds
    are skipped, so loading again (after a resumed scan) adds only the new rows."""
    parts = part_files(Path(output))
    if not parts:
        return 0
    dataset = pads.dataset([str(p) for p in parts], format="parquet")
    if "embedding" not in dataset.schema.names:
        raise ScanError(
            "this scan kept no embeddings (--no-embeddings); nothing to index",
            source=str(output),
        )
    usable = pc.is_null(pc.field("error_code")) & pc.is_valid(pc.field("embedding"))
    added = 0
    with Index.open(location) as index:
        for batch in dataset.to_batches(columns=_COLUMNS, filter=usable, batch_size=LOAD_BATCH):
            if not batch.num_rows:
                continue
            columns = batch.to_pydict()
            vectors = np.asarray(columns["embedding"], dtype=np.float32)
            for model in sorted(set(columns["model"])):
                rows = [
                    NewEntry(sha, path, label, score, vector)
                    for sha, path, label, score, vector, row_model in zip(
                        columns["sha256"],
                        columns["path"],
                        columns["label"],
                        columns["nsfw_score"],
                        vectors,
                        columns["model"],
                        strict=True,
                    )
                    if row_model == model
                ]
                added += len(index.add_entries(rows, model=model).added)
            if on_progress is not None:
                on_progress(batch.num_rows)
    return added
