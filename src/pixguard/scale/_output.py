"""The scan's output folder: a Parquet dataset of parts, plus a manifest.

Parts are whole files: the local engine writes each under a hidden temporary name
and renames it into place; a part a killed Ray writer left without its footer is
unreadable, and resume moves it aside (hidden, so Parquet readers skip it) and
scans its inputs again. Rows in readable parts are done, so a rerun skips them.
Parts with other columns than this version writes (an older pixguard's, before
the video columns) are refused with a clear error rather than mixed in.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .._exceptions import ScanError
from .._files import atomic_file, write_json_atomic

__all__ = [
    "MANIFEST",
    "PartWriter",
    "ScanSummary",
    "check_manifest",
    "done_paths",
    "new_run_id",
    "part_files",
    "summarise",
]

#: Parquet readers skip names starting with "_" or ".", so the manifest and the
#: temporary or quarantined parts never look like data.
MANIFEST = "_pixguard_scan.json"
_QUARANTINE_PREFIX = ".unreadable-"
#: Rows per part file written by the local engine: small enough that a crash loses
#: little, large enough that a million-image scan has a few hundred files.
DEFAULT_ROWS_PER_FILE = 4096


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def part_files(output: Path) -> list[Path]:
    return sorted(p for p in output.glob("*.parquet") if not p.name.startswith((".", "_")))


def check_manifest(output: Path, expected: dict[str, Any], *, resume: bool) -> None:
    """Refuse to mix runs: an existing scan resumes only with the same model, runtime
    and columns; without ``resume``, an existing scan is left alone."""
    manifest = output / MANIFEST
    if part_files(output) or manifest.exists():
        if not resume:
            raise ScanError(
                "the output folder already holds a scan; rerun with --resume to finish it, "
                "or choose another folder",
                source=str(output),
            )
        if manifest.exists():
            recorded = json.loads(manifest.read_text(encoding="utf-8"))
            missing = sorted(set(expected) - set(recorded))
            if missing:
                raise ScanError(
                    f"the output folder holds a scan by an older pixguard (its manifest lacks "
                    f"{', '.join(missing)}); scan into a new folder",
                    source=str(output),
                )
            different = {
                key: (recorded.get(key), value)
                for key, value in expected.items()
                if recorded.get(key) != value
            }
            if different:
                detail = ", ".join(
                    f"{k}: {old!r} -> {new!r}" for k, (old, new) in different.items()
                )
                raise ScanError(
                    f"cannot resume a scan made with other settings ({detail})",
                    source=str(output),
                )
    output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(manifest, expected)


def done_paths(output: Path, columns: Sequence[str]) -> set[str]:
    """Paths already in readable parts; unreadable parts are moved aside. A part
    whose columns are not ``columns`` stops the scan: rows of two layouts would not
    read back as one dataset."""
    done: set[str] = set()
    for part in part_files(output):
        try:
            with pq.ParquetFile(part) as parquet:
                names = set(parquet.schema_arrow.names)
                paths = parquet.read(columns=["path"]).column("path").to_pylist()
        except (OSError, pa.ArrowException):
            os.replace(part, part.with_name(_QUARANTINE_PREFIX + part.name))
            continue
        if names != set(columns):
            missing = ", ".join(c for c in columns if c not in names) or "none"
            extra = ", ".join(sorted(names - set(columns))) or "none"
            raise ScanError(
                f"{part.name} has other columns than this pixguard writes (missing: {missing}; "
                f"extra: {extra}), as a scan by another version would; scan into a new folder",
                source=str(output),
            )
        done.update(paths)
    return done


class PartWriter:
    """Buffers row tables and writes them as whole part files."""

    def __init__(
        self,
        output: Path,
        schema: pa.Schema,
        run_id: str,
        rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    ) -> None:
        self.output = output
        self.schema = schema
        self.run_id = run_id
        self.rows_per_file = rows_per_file
        self._pending: list[pa.Table] = []
        self._rows = 0
        self._parts = 0

    def add(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._rows += table.num_rows
        if self._rows >= self.rows_per_file:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        table = pa.concat_tables(self._pending).cast(self.schema)
        target = self.output / f"part-{self.run_id}-{self._parts:05d}.parquet"
        with atomic_file(target) as temporary:
            pq.write_table(table, temporary)
        self._parts += 1
        self._pending, self._rows = [], 0


@dataclass
class ScanSummary:
    """Counts over the whole output (earlier runs included) and this run's speed."""

    output: Path
    rows: int
    labels: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    scanned: int = 0
    skipped: int = 0
    seconds: float = 0.0
    #: New entries loaded into an index (``scan --index``), or None.
    indexed: int | None = None

    @property
    def images_per_second(self) -> float:
        return self.scanned / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "rows": self.rows,
            "labels": self.labels,
            "actions": self.actions,
            "errors": self.errors,
            "scanned": self.scanned,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "indexed": self.indexed,
        }


def summarise(output: Path, *, scanned: int, skipped: int, seconds: float) -> ScanSummary:
    parts = part_files(output)
    if not parts:
        return ScanSummary(output, 0, scanned=scanned, skipped=skipped, seconds=seconds)
    table = pads.dataset([str(p) for p in parts], format="parquet").to_table(
        columns=["label", "action", "error_code"]
    )

    def counts(column: str) -> dict[str, int]:
        return dict(Counter(v for v in table.column(column).to_pylist() if v is not None))

    return ScanSummary(
        output,
        table.num_rows,
        labels=counts("label"),
        actions=counts("action"),
        errors=counts("error_code"),
        scanned=scanned,
        skipped=skipped,
        seconds=seconds,
    )
