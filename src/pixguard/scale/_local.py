"""The local engine: the scan's batch function on this machine, without Ray."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa

from ._batch import ScanBatch, ScanOptions
from ._output import PartWriter
from ._sources import ScanInput

__all__ = ["run_local"]


def _as_table(inputs: Sequence[ScanInput]) -> pa.Table:
    return pa.table(
        {
            "path": pa.array([item.path for item in inputs], pa.string()),
            "size": pa.array([item.size for item in inputs], pa.int64()),
        }
    )


def run_local(
    inputs: Sequence[ScanInput],
    options: ScanOptions,
    output: Path,
    run_id: str,
    *,
    rows_per_file: int,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Scan ``inputs`` into part files; returns how many rows were written.

    Reading and decoding batch n+1 (threads) overlaps inference on batch n, so the
    model is not left idle; at most two batches are in memory.
    """
    scanner = ScanBatch(options)
    writer = PartWriter(output, scanner.schema, run_id, rows_per_file)
    batches = [
        _as_table(inputs[start : start + options.batch_size])
        for start in range(0, len(inputs), options.batch_size)
    ]
    written = 0
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="pixguard-scan-ahead") as ahead:
            upcoming = ahead.submit(scanner.prepare, batches[0]) if batches else None
            for position in range(len(batches)):
                assert upcoming is not None
                reads = upcoming.result()
                if position + 1 < len(batches):
                    upcoming = ahead.submit(scanner.prepare, batches[position + 1])
                table = scanner.finish(reads)
                writer.add(table)
                written += table.num_rows
                if on_progress is not None:
                    on_progress(table.num_rows)
        writer.flush()
    finally:
        scanner.close()
    return written
