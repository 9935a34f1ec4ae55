"""Result writers for ``pixguard classify``: table, json, jsonl, csv."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._files import AtomicFile
from ..classify import Prediction
from ._common import print_table, printable

__all__ = ["EmbeddingWriter", "OutputFormat", "ResultWriter"]


# The policy's verdict, after the prediction's own columns.
_POLICY_COLUMNS = ("action", "reason", "policy_version")


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


def _csv_header(label_names: Sequence[str]) -> list[str]:
    return [
        "path",
        "label",
        "nsfw_score",
        *(f"p_{name}" for name in label_names),
        "model",
        "threshold",
        "runtime",
        "frame",
        "frames_classified",
        "frame_count",
        "error_code",
        "error_message",
    ]


def _csv_row(prediction: Prediction, label_names: Sequence[str]) -> list[Any]:
    error = prediction.error
    return [
        printable(prediction.source),
        prediction.label or "",
        "" if prediction.nsfw_score is None else f"{prediction.nsfw_score:.6f}",
        *(
            f"{prediction.probabilities[name]:.6f}" if name in prediction.probabilities else ""
            for name in label_names
        ),
        prediction.model,
        prediction.threshold,
        prediction.runtime,
        "" if prediction.frame is None else prediction.frame,
        prediction.frames_classified,
        prediction.frame_count,
        error.code if error else "",
        printable(str(error)) if error else "",
    ]


class ResultWriter:
    """Streams jsonl and csv as results arrive; json and table are written at the end."""

    def __init__(
        self,
        stream: IO[str],
        fmt: OutputFormat,
        label_names: Sequence[str],
        console: Console,
        *,
        with_bank: bool = False,
        with_policy: bool = False,
    ) -> None:
        self._stream = stream
        self._format = fmt
        self._label_names = list(label_names)
        self._console = console
        self._with_bank = with_bank
        self._with_policy = with_policy
        self._held: list[tuple[Prediction, dict[str, Any]]] = []
        self._csv = csv.writer(stream) if fmt is OutputFormat.csv else None
        if self._csv is not None:
            bank_columns = ["bank_match", "bank_similarity", "bank_id"] if with_bank else []
            policy_columns = list(_POLICY_COLUMNS) if with_policy else []
            self._csv.writerow(_csv_header(self._label_names) + bank_columns + policy_columns)

    def write(self, prediction: Prediction, extra: dict[str, Any] | None = None) -> None:
        """``extra`` fields (a bank match) are added to the prediction's own."""
        extra = extra or {}
        if self._format is OutputFormat.jsonl:
            self._stream.write(json.dumps({**prediction.to_dict(), **extra}) + "\n")
        elif self._csv is not None:
            row = _csv_row(prediction, self._label_names)
            if self._with_bank:
                nearest = extra.get("bank_nearest") or {}
                row += [
                    extra.get("bank_match", ""),
                    nearest.get("similarity", ""),
                    nearest.get("id", ""),
                ]
            if self._with_policy:
                row += [extra.get(column, "") for column in _POLICY_COLUMNS]
            self._csv.writerow(row)
        else:
            self._held.append((prediction, extra))

    def close(self) -> None:
        if self._format is OutputFormat.json:
            json.dump([{**p.to_dict(), **extra} for p, extra in self._held], self._stream, indent=2)
            self._stream.write("\n")
        elif self._format is OutputFormat.table:
            print_table(
                _table(self._held, with_bank=self._with_bank, with_policy=self._with_policy),
                self._console,
            )
        self._stream.flush()


def _bank_cell(extra: dict[str, Any]) -> str:
    nearest = extra.get("bank_nearest")
    if not nearest:
        return "-"
    text = f"#{nearest['id']} {nearest['similarity']:.3f}"
    return f"[bold red]MATCH {text}[/]" if extra.get("bank_match") else text


_ACTION_STYLE = {"block": "[bold red]block[/]", "review": "[yellow]review[/]", "allow": "allow"}


def _table(
    rows: Sequence[tuple[Prediction, dict[str, Any]]], *, with_bank: bool, with_policy: bool
) -> Table:
    table = Table(show_lines=False)
    table.add_column("path", overflow="fold")
    table.add_column("label")
    table.add_column("nsfw_score", justify="right")
    table.add_column("frame", justify="right")
    if with_bank:
        table.add_column("bank")
    if with_policy:
        table.add_column("action")
    table.add_column("error", overflow="fold")
    for p, extra in rows:
        label = {"nsfw": "[bold red]nsfw[/]", "sfw": "[green]sfw[/]"}.get(p.label or "", "-")
        table.add_row(
            escape(printable(p.source)),
            label,
            "-" if p.nsfw_score is None else f"{p.nsfw_score:.4f}",
            "" if p.frame_count <= 1 else f"{p.frame}/{p.frame_count}",
            *([_bank_cell(extra)] if with_bank else []),
            *([_ACTION_STYLE[extra["action"]]] if with_policy else []),
            f"[yellow]{p.error.code}[/]: {escape(printable(p.error.message))}" if p.error else "",
        )
    if rows:
        first = rows[0][0]
        table.caption = f"model {first.model}, threshold {first.threshold}"
        if with_policy:
            table.caption += f", policy {rows[0][1]['policy_version'][:12]}"
    return table


class EmbeddingWriter:
    """Writes an (N, D) float32 ``.npy`` in input order; rows of failed inputs are NaN.

    The array is filled on disk through a memory map, so memory stays flat on any
    number of inputs, and renamed into place only when complete.
    """

    def __init__(self, path: Path, count: int, dim: int) -> None:
        self._file = AtomicFile(path)
        self._array = np.lib.format.open_memmap(
            self._file.temporary, mode="w+", dtype=np.float32, shape=(count, dim)
        )
        self._array[:] = np.nan
        self._row = 0

    def write(self, prediction: Prediction) -> None:
        if prediction.embedding is not None:
            self._array[self._row] = prediction.embedding
        self._row += 1

    def close(self) -> None:
        self._array.flush()
        del self._array
        self._file.commit()

    def abort(self) -> None:
        self._file.abort()
