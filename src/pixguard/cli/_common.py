"""Pieces shared by the CLI's commands."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .._exceptions import PixguardError

__all__ = [
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_SOME_INPUTS_FAILED",
    "EXIT_USAGE",
    "ModelOption",
    "fail",
    "progress_bar",
    "stderr",
]

EXIT_OK = 0
EXIT_SOME_INPUTS_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3

stderr = Console(stderr=True)

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
