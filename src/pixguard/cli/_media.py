"""What ``classify`` runs beyond still images (explanations with ``--explain``,
videos), and ``pixguard redact``."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._exceptions import PixguardError
from .._files import atomic_file
from ..classify import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BLUR_STRENGTH,
    DEFAULT_HEAT_THRESHOLD,
    Classifier,
    Prediction,
    Redaction,
)
from ..images import VideoSampling, is_video_path
from ..models import DEFAULT_MODEL
from ._common import (
    EXIT_SOME_INPUTS_FAILED,
    EXIT_USAGE,
    BatchSizeOption,
    ModelOption,
    RuntimeOption,
    fail,
    progress_bar,
    stderr,
)
from ._inputs import expand_paths

__all__ = ["OutputNames", "iter_results", "redact_command", "save_png"]


class OutputNames:
    """One output file per input, named after it: ``<stem>.png``, then
    ``<stem>-2.png`` ... when two inputs share a stem."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._used: set[str] = set()

    def next(self, source: str) -> Path:
        stem = Path(source).stem or "image"
        name = f"{stem}.png"
        for n in itertools.count(2):
            if name not in self._used:
                break
            name = f"{stem}-{n}.png"
        self._used.add(name)
        return self.folder / name


def save_png(image: Image.Image, path: Path) -> None:
    """Write ``image`` as PNG atomically."""
    with atomic_file(path) as temporary:
        image.save(temporary, format="PNG")


def iter_results(
    classifier: Classifier,
    inputs: list[Path],
    *,
    batch_size: int,
    explain: Path | None,
    sampling: VideoSampling,
    stop_at: float | None,
) -> Iterator[tuple[Prediction, dict[str, Any]]]:
    """Predictions in input order, each with extra fields for the output: videos
    through :meth:`Classifier.predict_video`, runs of images through the usual
    batching, or, with ``explain``, with their ``explanation`` grid and overlay."""
    names = OutputNames(explain) if explain is not None else None
    for is_video, group in itertools.groupby(inputs, key=is_video_path):
        paths = list(group)
        if is_video:
            for path in paths:
                yield (
                    classifier.predict_video(
                        path, sampling=sampling, stop_at=stop_at, batch_size=batch_size
                    ),
                    {},
                )
        elif names is None:
            for prediction in classifier.iter_predict(paths, batch_size=batch_size):
                yield prediction, {}
        else:
            yield from _iter_explained(classifier, paths, batch_size=batch_size, names=names)


def _iter_explained(
    classifier: Classifier, inputs: list[Path], *, batch_size: int, names: OutputNames
) -> Iterator[tuple[Prediction, dict[str, Any]]]:
    for start in range(0, len(inputs), batch_size):
        for explanation in classifier.explain(
            inputs[start : start + batch_size], batch_size=batch_size
        ):
            extra: dict[str, Any] = {"explanation": explanation.to_dict(), "overlay": None}
            if explanation.ok:
                path = names.next(explanation.source)
                save_png(explanation.overlay(), path)
                extra["overlay"] = str(path)
            elif explanation.error is not None and explanation.prediction.ok:
                extra["explanation_error"] = explanation.error.to_dict()
            yield explanation.prediction, extra


def _table(rows: list[tuple[Redaction, str | None]]) -> Table:
    table = Table()
    for column in ("path", "action", "nsfw_score", "after region blur", "output", "note"):
        table.add_column(column, overflow="fold")
    for redaction, output in rows:
        note = redaction.reason or ""
        if redaction.error is not None:
            note = f"[yellow]{redaction.error.code}[/]: {escape(redaction.error.message)}"
        table.add_row(
            escape(redaction.source),
            redaction.action or "-",
            "-" if redaction.nsfw_score is None else f"{redaction.nsfw_score:.4f}",
            "-" if redaction.redacted_score is None else f"{redaction.redacted_score:.4f}",
            escape(output or "-"),
            note if redaction.error is not None else escape(note),
        )
    return table


def redact_command(
    paths: Annotated[list[str], typer.Argument(help="Image files or folders.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the redacted PNGs.")],
    model: ModelOption = DEFAULT_MODEL,
    strength: Annotated[
        float,
        typer.Option(min=0.001, max=1.0, help="Blur radius as a fraction of the longer side."),
    ] = DEFAULT_BLUR_STRENGTH,
    heat_threshold: Annotated[
        float,
        typer.Option(
            min=0.001, max=1.0, help="Blur where the heat (1 = the image's peak) reaches this."
        ),
    ] = DEFAULT_HEAT_THRESHOLD,
    threshold: Annotated[
        float | None, typer.Option(help="NSFW threshold in [0, 1]; default: the model's own.")
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")
    ] = False,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    runtime: RuntimeOption = "auto",
    output_format: Annotated[
        str, typer.Option("--format", "-f", help="table or json.", case_sensitive=False)
    ] = "table",
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress", help="Progress bar on stderr (default: when a terminal)."
        ),
    ] = None,
) -> None:
    """Blur the regions of flagged images where the NSFW evidence is, keeping the rest
    sharp. The result is re-classified; if it still scores at or above the threshold,
    or the explanation fails, the whole image is blurred (it fails closed). Images
    below the threshold are written unchanged.

    Exit status: 0 when every input was read, 1 when some could not be, 2 on usage
    or model errors.
    """
    if output_format not in ("table", "json"):
        raise typer.BadParameter("must be table or json", param_hint="--format")
    inputs = expand_paths([Path(path) for path in paths], recursive=recursive)
    if not inputs:
        stderr.print("[bold red]error[/] no image files found in the given paths")
        raise typer.Exit(EXIT_USAGE)
    try:
        classifier = Classifier.load(model, threshold=threshold, runtime=runtime)
    except PixguardError as exc:
        raise fail(exc) from None
    names = OutputNames(output)
    rows: list[tuple[Redaction, str | None]] = []
    show_progress = stderr.is_terminal if progress is None else progress
    with classifier, progress_bar(show_progress and len(inputs) > 1, "redacting") as bar:
        task = bar.add_task("redact", total=len(inputs))
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            for redaction in classifier.redact(
                chunk, strength=strength, heat_threshold=heat_threshold, batch_size=batch_size
            ):
                path = None
                if redaction.image is not None:
                    path = names.next(redaction.source)
                    save_png(redaction.image, path)
                rows.append((redaction, None if path is None else str(path)))
                bar.advance(task)
    if output_format == "json":
        data = [{**r.to_dict(), "output": out} for r, out in rows]
        typer.echo(json.dumps(data, indent=2))
    else:
        Console().print(_table(rows))
    failures = sum(1 for redaction, _ in rows if not redaction.ok)
    if failures:
        stderr.print(f"[yellow]{failures} of {len(inputs)} inputs could not be read[/]")
        raise typer.Exit(EXIT_SOME_INPUTS_FAILED)
