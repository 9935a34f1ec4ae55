"""``pixguard review ...``: queue images for people, and export their decisions."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._exceptions import PixguardError
from .._files import default_data_dir
from ..classify import DEFAULT_BATCH_SIZE, Classifier
from ..index import Index
from ..models import DEFAULT_MODEL
from ..policy import Policy
from ..review import ReviewQueue, export_training_set, route_images
from ._common import (
    EXIT_SOME_INPUTS_FAILED,
    EXIT_USAGE,
    BatchSizeOption,
    DataDirOption,
    ModelOption,
    RuntimeOption,
    fail,
    progress_bar,
    stderr,
)
from ._inputs import expand_paths

__all__ = ["review_app"]

review_app = typer.Typer(
    help="The human review queue: add images through a policy, export decisions for training.",
    no_args_is_help=True,
)


def _queue(data_dir: Path | None) -> ReviewQueue:
    try:
        return ReviewQueue.open(data_dir or default_data_dir())
    except PixguardError as exc:
        raise fail(exc) from None


@review_app.command("add")
def add(
    paths: Annotated[list[Path], typer.Argument(help="Images or folders.", show_default=False)],
    policy_file: Annotated[
        Path, typer.Option("--policy", help="The policy that routes images to review.")
    ],
    model: ModelOption = DEFAULT_MODEL,
    recursive: Annotated[bool, typer.Option("--recursive", "-r")] = False,
    data_dir: DataDirOption = None,
    bank: Annotated[
        Path | None, typer.Option(help="A known-bad bank; its matches follow bank_match.")
    ] = None,
    bank_threshold: Annotated[float | None, typer.Option()] = None,
    runtime: RuntimeOption = "auto",
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    output_format: Annotated[str, typer.Option("--format", "-f", help="table or jsonl.")] = "table",
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress")] = None,
) -> None:
    """Classify images, apply the policy, and queue those it routes to review.

    Exit status 1 when some inputs could not be read (they are blocked by the
    policy, never queued).
    """
    if output_format not in ("table", "jsonl"):
        raise typer.BadParameter("must be table or jsonl", param_hint="--format")
    inputs = expand_paths(paths, recursive=recursive)
    if not inputs:
        stderr.print("[bold red]error[/] no image files found in the given paths")
        raise typer.Exit(EXIT_USAGE)
    with ExitStack() as stack:
        try:
            policy = Policy.load(policy_file)
            classifier = stack.enter_context(Classifier.load(model, runtime=runtime))
            known_bad = stack.enter_context(Index.open(bank, create=False)) if bank else None
            queue = stack.enter_context(_queue(data_dir))
            bar = stack.enter_context(
                progress_bar(stderr.is_terminal if progress is None else progress, "reviewing")
            )
            task = bar.add_task("review", total=len(inputs))
            results = []
            for routed in route_images(
                inputs,
                classifier,
                policy,
                queue,
                bank=known_bad,
                bank_threshold=bank_threshold,
                batch_size=batch_size,
            ):
                if output_format == "jsonl":
                    typer.echo(json.dumps(routed.to_dict()))
                results.append(routed)
                bar.advance(task)
        except PixguardError as exc:
            raise fail(exc) from None
    queued = sum(r.item is not None for r in results)
    failures = sum(r.prediction.error is not None for r in results)
    if output_format == "table":
        table = Table(caption=f"policy {policy.version[:12]}: {queued} queued for review")
        for column in ("path", "nsfw_score", "action", "item"):
            table.add_column(column)
        for r in results:
            score = r.prediction.nsfw_score
            table.add_row(
                escape(r.source),
                "-" if score is None else f"{score:.4f}",
                r.decision.action.value,
                "" if r.item is None else f"#{r.item.id}",
            )
        Console().print(table)
    if failures:
        stderr.print(f"[yellow]{failures} of {len(inputs)} inputs could not be classified[/]")
        raise typer.Exit(EXIT_SOME_INPUTS_FAILED)


@review_app.command("export")
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="A new or empty folder.")],
    data_dir: DataDirOption = None,
) -> None:
    """Write the decided items as an ImageFolder (nsfw/, sfw/) plus manifest.csv, which
    `pixguard finetune DIR --nsfw-class nsfw` takes as it is."""
    with _queue(data_dir) as queue:
        try:
            report = export_training_set(queue, output)
        except PixguardError as exc:
            raise fail(exc) from None
    typer.echo(json.dumps(report.to_dict()))


@review_app.command("stats")
def stats(data_dir: DataDirOption = None) -> None:
    """Queue depth, decisions by kind, agreement with the model, the oldest item's age."""
    with _queue(data_dir) as queue:
        typer.echo(json.dumps(queue.stats(), indent=2))
