"""Pieces shared by the CLI's commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .._exceptions import PixguardError

__all__ = [
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_SOME_INPUTS_FAILED",
    "EXIT_USAGE",
    "ModelOption",
    "fail",
    "print_table",
    "printable",
    "progress_bar",
    "stderr",
]

EXIT_OK = 0
EXIT_SOME_INPUTS_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3

stderr = Console(stderr=True)

# Options that several commands share, declared once so their help stays the same.
RuntimeOption = Annotated[
    str,
    typer.Option(
        help="auto, torch, onnxruntime or openvino. auto: the fastest here that passes the parity gate."
    ),
]
PrecisionOption = Annotated[
    str | None, typer.Option(help="fp32, bf16 or int8 (default: fp32, or auto's choice).")
]
BatchSizeOption = Annotated[int, typer.Option(min=1, help="Images per forward pass.")]
MaxPixelsOption = Annotated[int, typer.Option(min=1, help="Reject images with more pixels.")]
MaxBytesOption = Annotated[
    int, typer.Option(min=1, help="Reject inputs larger than this many bytes.")
]

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        help="The data folder that the service and the CLI share: keys.db, audit.db, "
        "review.db, queued and generated images (default $XDG_DATA_HOME/pixguard or "
        "~/.local/share/pixguard)."
    ),
]
VideoFpsOption = Annotated[
    float, typer.Option(min=0.001, help="Videos: frames sampled per second.")
]
SceneThresholdOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Videos: also sample frames that change this much (mean, 0-1) from the last; 0 turns it off.",
    ),
]

ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Registered model name, model folder, or hf-hub:owner/repo[@revision].",
    ),
]


def fail(error: PixguardError) -> typer.Exit:
    """Print ``error`` with its code on stderr; the caller raises the returned Exit."""
    stderr.print(f"[bold red]error[/] {escape(f'[{error.code}] {error}')}", highlight=False)
    return typer.Exit(EXIT_USAGE)


def progress_bar(enabled: bool, label: str = "classifying") -> Progress:
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=not enabled,
        transient=False,
    )


def printable(text: str) -> str:
    """``text`` safe to write as UTF-8: bytes of non-UTF-8 file names (held by
    Python as lone surrogates) are shown as ``\\xNN`` escapes instead of failing."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _plain(cell: object) -> str:
    if isinstance(cell, Text):
        text = cell.plain
    elif isinstance(cell, str):
        text = Text.from_markup(cell).plain
    else:
        text = str(cell)
    return printable(text).replace("\t", " ").replace("\n", " ")


def print_table(table: Table, console: Console | None = None) -> None:
    """A rich table on a terminal; elsewhere (a pipe, a file) plain tab-separated
    lines with every value whole: a header line, one line per row, and the title and
    caption as ``# `` lines."""
    console = console or Console()
    if console.is_terminal:
        console.print(table)
        return
    stream = console.file
    if table.title:
        stream.write(f"# {_plain(table.title)}\n")
    columns = table.columns
    if table.show_header:
        stream.write("\t".join(_plain(column.header) for column in columns) + "\n")
    for row in zip(*(list(column.cells) for column in columns), strict=True):
        stream.write("\t".join(_plain(cell) for cell in row) + "\n")
    if table.caption:
        stream.write(f"# {_plain(table.caption)}\n")
    stream.flush()
