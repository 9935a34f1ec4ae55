"""The ``pixguard`` command: a thin layer over the Python API."""

from __future__ import annotations

import json
import os
import sys
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer
from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._exceptions import PixguardError
from .._files import atomic_text_file
from .._version import __version__
from ..classify import DEFAULT_BATCH_SIZE, Classifier, Prediction
from ..export import export_model
from ..images import IMAGE_SUFFIXES, VIDEO_SUFFIXES, DecodeLimits, VideoSampling
from ..index import Index
from ..models import DEFAULT_MODEL, list_models, model_status
from ..policy import Policy, block_score, decide_worst
from ._common import (
    EXIT_INTERNAL,
    EXIT_SOME_INPUTS_FAILED,
    EXIT_USAGE,
    BatchSizeOption,
    MaxBytesOption,
    MaxPixelsOption,
    ModelOption,
    PrecisionOption,
    RuntimeOption,
    SceneThresholdOption,
    VideoFpsOption,
    fail,
    print_table,
    progress_bar,
    stderr,
)
from ._generate import generate_command
from ._help import CommandsInUserOrder
from ._index import index_app
from ._inputs import expand_paths
from ._lora import lora_app
from ._media import iter_results, redact_command
from ._output import EmbeddingWriter, OutputFormat, ResultWriter
from ._review import review_app
from ._scan import scan_command
from ._serve import keys_app, serve_command
from ._train import register as register_training

__all__ = ["app", "main"]


app = typer.Typer(
    name="pixguard",
    cls=CommandsInUserOrder,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Self-hosted image safety: classify images NSFW/SFW on this machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pixguard {__version__}")
        raise typer.Exit()


app.add_typer(index_app, name="index")
register_training(app)
app.command("serve")(serve_command)
app.command("generate")(generate_command)
app.add_typer(lora_app, name="lora")
app.add_typer(keys_app, name="keys")
app.command("redact")(redact_command)
app.add_typer(review_app, name="review")
app.command("scan")(scan_command)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """pixguard command line."""


@app.command()
def models(
    output_format: Annotated[
        str, typer.Option("--format", help="table or json.", case_sensitive=False)
    ] = "table",
) -> None:
    """List the model registry and whether each model can load on this machine."""
    if output_format not in ("table", "json"):
        raise typer.BadParameter("must be table or json", param_hint="--format")
    rows: list[dict[str, Any]] = []
    for spec in list_models():
        channels, height, width = spec.preprocessing.input_size
        rows.append(
            {
                "name": spec.name,
                "default": spec.name == DEFAULT_MODEL,
                "source": f"{spec.source}:{spec.location}",
                "architecture": spec.architecture,
                "input_size": [channels, height, width],
                "embedding_dim": spec.embedding_dim,
                "labels": list(spec.label_names),
                "nsfw_labels": list(spec.nsfw_labels),
                "threshold": spec.threshold,
                "status": model_status(spec),
            }
        )
    if output_format == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="pixguard models")
    for column in ("name", "source", "architecture", "input", "embedding", "status"):
        table.add_column(column)
    for row in rows:
        status = row["status"]
        colour = "red" if status == "missing" else "green"
        table.add_row(
            row["name"] + (" (default)" if row["default"] else ""),
            row["source"],
            row["architecture"],
            "x".join(str(v) for v in row["input_size"][1:]),
            str(row["embedding_dim"]),
            f"[{colour}]{status}[/]",
        )
    print_table(table)


@app.command()
def classify(
    paths: Annotated[list[str], typer.Argument(help="Image files or folders.", show_default=False)],
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")
    ] = False,
    model: ModelOption = DEFAULT_MODEL,
    threshold: Annotated[
        float | None, typer.Option(help="NSFW threshold in [0, 1]; default: the model's own.")
    ] = None,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", "-f", case_sensitive=False, help="Output format.")
    ] = OutputFormat.table,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write results here (atomically) instead of stdout."),
    ] = None,
    embeddings: Annotated[
        Path | None,
        typer.Option(help="Also save embeddings as an (N, D) float32 .npy, in input order."),
    ] = None,
    max_pixels: MaxPixelsOption = DecodeLimits.max_pixels,
    max_bytes: MaxBytesOption = DecodeLimits.max_bytes,
    runtime: RuntimeOption = "auto",
    precision: PrecisionOption = None,
    bank: Annotated[
        str | None,
        typer.Option(help="A known-bad index: report each image's nearest entry and flag matches."),
    ] = None,
    bank_threshold: Annotated[
        float | None,
        typer.Option(help="Similarity that counts as a bank match (default: the bank's own)."),
    ] = None,
    policy_file: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="A policy TOML file: add its action (allow/review/block) to each result.",
        ),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress", help="Progress bar on stderr (default: when a terminal)."
        ),
    ] = None,
    trust_torchscript: Annotated[
        bool,
        typer.Option(
            help="Load a TorchScript model that pixguard did not export here (TorchScript is code)."
        ),
    ] = False,
    explain: Annotated[
        Path | None,
        typer.Option(
            "--explain",
            help="Write heatmap overlays (DIR/<name>.png) and add an `explanation` grid to each result.",
        ),
    ] = None,
    video_fps: VideoFpsOption = VideoSampling.fps,
    scene_threshold: SceneThresholdOption = VideoSampling.scene_threshold,
    stop_at_block: Annotated[
        bool,
        typer.Option(
            "--stop-at-block",
            help="Videos: stop decoding at the first frame at or above the block score "
            "(the policy's block_from, else the threshold).",
        ),
    ] = False,
) -> None:
    """Classify images as NSFW/SFW.

    Exit status: 0 when every input was read, 1 when some could not be (they are
    still reported, each with its error), 2 on usage or model errors, 3 on an
    internal error (a bug).
    """
    if any(not path.strip() for path in paths):
        raise typer.BadParameter("an empty path was given", param_hint="PATHS")
    inputs = expand_paths(
        [Path(path) for path in paths],
        recursive=recursive,
        suffixes=IMAGE_SUFFIXES | VIDEO_SUFFIXES,
    )
    if not inputs:
        stderr.print("[bold red]error[/] no image files (or videos) found in the given paths")
        raise typer.Exit(EXIT_USAGE)
    sampling = VideoSampling(fps=video_fps, scene_threshold=scene_threshold or None)
    try:
        policy = Policy.load(policy_file) if policy_file is not None else None
        limits = DecodeLimits(max_pixels=max_pixels, max_bytes=max_bytes)
        classifier = Classifier.load(
            model,
            threshold=threshold,
            limits=limits,
            runtime=runtime,
            precision=precision,
            trust_torchscript=trust_torchscript,
        )
        if policy is not None:
            policy.check_labels(classifier.name, classifier.spec.label_names)
    except PixguardError as exc:
        raise fail(exc) from None
    stop_at = None
    if stop_at_block:
        stop_at = block_score(policy, classifier.name) if policy else classifier.threshold

    known_bad = None
    if bank is not None:
        try:
            known_bad = Index.open(bank, create=False)
        except PixguardError as exc:
            raise fail(exc) from None

    show_progress = stderr.is_terminal if progress is None else progress
    failures = 0
    with ExitStack() as stack:
        stack.enter_context(classifier)
        if known_bad is not None:
            stack.enter_context(known_bad)
        stream = stack.enter_context(atomic_text_file(output)) if output else sys.stdout
        table_console = Console(file=stream, width=160) if output else Console()
        writer = ResultWriter(
            stream,
            output_format,
            classifier.spec.label_names,
            table_console,
            with_bank=known_bad is not None,
            with_policy=policy is not None,
        )
        vectors = (
            EmbeddingWriter(embeddings, len(inputs), classifier.embedding_dim or 0)
            if embeddings
            else None
        )
        bar = stack.enter_context(progress_bar(show_progress and len(inputs) > 1))
        task = bar.add_task("classify", total=len(inputs))
        try:
            results = iter_results(
                classifier,
                inputs,
                batch_size=batch_size,
                explain=explain,
                sampling=sampling,
                stop_at=stop_at,
            )
            for prediction, extra in results:
                if known_bad is not None:
                    extra |= known_bad.match([prediction], threshold=bank_threshold)[0].to_dict()
                if policy is not None:
                    matched = bool(extra.get("bank_match", False))
                    extra.update(decide_worst(policy, prediction, bank_match=matched).to_dict())
                failures += _record(prediction, writer, vectors, extra)
                bar.advance(task)
        except PixguardError as exc:  # the bank was built with another model
            if vectors is not None:
                vectors.abort()
            raise fail(exc) from None
        except BaseException:
            if vectors is not None:
                vectors.abort()
            raise
        writer.close()
        if vectors is not None:
            vectors.close()
    if failures:
        stderr.print(f"[yellow]{failures} of {len(inputs)} inputs could not be classified[/]")
        raise typer.Exit(EXIT_SOME_INPUTS_FAILED)


@app.command()
def export(
    model: ModelOption = DEFAULT_MODEL,
    export_format: Annotated[
        str, typer.Option("--format", "-f", help="onnx, torchscript or openvino.")
    ] = "onnx",
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to create.")] = Path(
        "exported"
    ),
    precision: Annotated[
        str, typer.Option(help="fp32, or int8 (onnx/openvino; needs --calibration).")
    ] = "fp32",
    calibration: Annotated[
        Path | None,
        typer.Option(
            help="Folder of real images, like those the model will see, to calibrate int8."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
) -> None:
    """Export a model to a self-describing folder that `--model DIR` loads anywhere.

    The exported scores are checked against the source model (fp32: within 1e-4;
    int8: the parity gate) before anything is written.
    """
    images = expand_paths([calibration], recursive=True) if calibration else None
    try:
        with stderr.status(f"exporting {model} to {export_format}/{precision}"):
            result = export_model(
                model,
                format=export_format,
                output=output,
                precision=precision,
                calibration=images,
                overwrite=overwrite,
            )
    except PixguardError as exc:
        raise fail(exc) from None
    parity = result.parity
    typer.echo(
        f"wrote {result.folder} ({result.format}, {result.precision}); "
        f"max |delta score| vs source {parity.max_abs_diff:.2e} on {parity.images} images"
    )


def _record(
    prediction: Prediction,
    writer: ResultWriter,
    vectors: EmbeddingWriter | None,
    extra: dict[str, object] | None,
) -> int:
    writer.write(prediction, extra)
    if vectors is not None:
        vectors.write(prediction)
    return 0 if prediction.ok else 1


def main() -> None:
    # The command line is an application, which may choose its warnings (the library
    # never does): pixguard checks its own pixel limit from the header, so Pillow's
    # warning at its lower limit is noise on legitimate large photos.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    try:
        app()
    except Exception as exc:
        stderr.print(
            f"[bold red]internal error[/] {escape(f'{type(exc).__name__}: {exc}')}\n"
            "This is a bug in pixguard; rerun with PIXGUARD_DEBUG=1 for the traceback.",
            highlight=False,
        )
        if os.environ.get("PIXGUARD_DEBUG"):
            raise
        raise SystemExit(EXIT_INTERNAL) from None
