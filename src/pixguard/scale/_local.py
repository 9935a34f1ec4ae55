"""The local engine: the scan's batch function on this machine, without Ray."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ._batch import PASSES_PER_CALL, ScanBatch, ScanOptions
from ._output import PartWriter
from ._sources import ScanInput, listing_table

__all__ = ["run_local"]


def run_local(
    inputs: Sequence[ScanInput],
    options: ScanOptions,
    output: Path,
    run_id: str,
    *,
    rows_per_file: int,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Scan ``inputs`` into part files; returns how many rows were written."""
    scanner = ScanBatch(options)
    writer = PartWriter(output, scanner.schema, run_id, rows_per_file)
    step = options.batch_size * PASSES_PER_CALL
    written = 0
    try:
        for start in range(0, len(inputs), step):
            table = scanner(listing_table(inputs[start : start + step]))
            writer.add(table)
            written += table.num_rows
            if on_progress is not None:
                on_progress(table.num_rows)
        writer.flush()
    finally:
        scanner.close()
    return written
