"""``pixguard scan``: batch moderation of a collection into Parquet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .._exceptions import PixguardError
from ..classify import DEFAULT_BATCH_SIZE
from ..images import DecodeLimits, VideoSampling
from ..models import DEFAULT_MODEL
from ..policy import Policy
from ..scale import (
    DEFAULT_ROWS_PER_FILE,
    ENGINES,
    ObjectStoreOptions,
    ScanOptions,
    ScanSummary,
    load_into_index,
    scan,
)
from ._common import (
    BatchSizeOption,
    MaxBytesOption,
    MaxPixelsOption,
    ModelOption,
    PrecisionOption,
    RuntimeOption,
    SceneThresholdOption,
    VideoFpsOption,
    fail,
    progress_bar,
    stderr,
)

__all__ = ["scan_command"]


def scan_command(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Folders, globs, .txt/.parquet lists of paths, s3://bucket/prefix.",
            show_default=False,
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (Parquet).")],
    engine: Annotated[
        str | None,
        typer.Option(help="local or ray (default: ray when --ray-address is given, else local)."),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(help="Ray cluster to join: auto, or ray://HOST:10001."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Ray actors, one model each.")] = 1,
    cpus_per_worker: Annotated[float, typer.Option(min=0.0, help="CPUs per Ray actor.")] = 1.0,
    gpus_per_worker: Annotated[
        float, typer.Option(min=0.0, help="GPUs per Ray actor (1: one actor per GPU).")
    ] = 0.0,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    rows_per_file: Annotated[
        int, typer.Option(min=1, help="Rows per Parquet part.")
    ] = DEFAULT_ROWS_PER_FILE,
    model: ModelOption = DEFAULT_MODEL,
    runtime: RuntimeOption = "auto",
    precision: PrecisionOption = None,
    threshold: Annotated[float | None, typer.Option(help="NSFW threshold in [0, 1].")] = None,
    policy: Annotated[
        Path | None,
        typer.Option(help="A policy TOML file: adds each row's action (allow, review, block)."),
    ] = None,
    embeddings: Annotated[
        bool, typer.Option("--embeddings/--no-embeddings", help="Keep each image's embedding.")
    ] = True,
    index: Annotated[
        str | None,
        typer.Option(
            help="Also load the embeddings into this index: a folder, milvus:FILE.db or milvus://HOST:PORT/COLLECTION."
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume/--no-resume", help="Skip inputs already in the output folder."),
    ] = True,
    s3_endpoint: Annotated[
        str | None,
        typer.Option(help="S3-compatible endpoint URL (default: AWS_ENDPOINT_URL, else AWS)."),
    ] = None,
    s3_region: Annotated[str | None, typer.Option(help="S3 region (default: AWS_REGION).")] = None,
    max_pixels: MaxPixelsOption = DecodeLimits.max_pixels,
    max_bytes: MaxBytesOption = DecodeLimits.max_bytes,
    video_fps: VideoFpsOption = VideoSampling.fps,
    scene_threshold: SceneThresholdOption = VideoSampling.scene_threshold,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")
    ] = None,
    output_format: Annotated[
        str, typer.Option("--format", "-f", help="Summary as table or json.")
    ] = "table",
) -> None:
    """Classify a collection (images and videos) into a Parquet dataset, one row
    per input; resumable.

    Bad files become rows with their error code; they never fail the job.
    """
    if output_format not in ("table", "json"):
        raise typer.BadParameter("must be table or json", param_hint="--format")
    policy_bytes = None
    if policy is not None:
        try:
            Policy.load(policy)  # a bad policy stops the scan before any work
        except PixguardError as exc:
            raise fail(exc) from None
        policy_bytes = policy.read_bytes()
    options = ScanOptions(
        policy=policy_bytes,
        policy_source=str(policy),
        model=model,
        runtime=runtime,
        precision=precision,
        threshold=threshold,
        limits=DecodeLimits(max_pixels=max_pixels, max_bytes=max_bytes),
        sampling=VideoSampling(fps=video_fps, scene_threshold=scene_threshold or None),
        batch_size=batch_size,
        embeddings=embeddings,
        store=ObjectStoreOptions(endpoint=s3_endpoint, region=s3_region),
    )
    chosen = engine or ("ray" if ray_address else "local")
    if chosen not in ENGINES:
        raise typer.BadParameter(f"must be one of {', '.join(ENGINES)}", param_hint="--engine")
    show = stderr.is_terminal if progress is None else progress
    with progress_bar(show and chosen == "local", "scanning") as bar:
        task = bar.add_task("scan", total=None)
        try:
            summary = scan(
                sources,
                output,
                options,
                engine=chosen,
                ray_address=ray_address,
                workers=workers,
                cpus_per_worker=cpus_per_worker,
                gpus_per_worker=gpus_per_worker,
                resume=resume,
                rows_per_file=rows_per_file,
                on_listed=lambda total: bar.update(task, total=total),
                on_progress=lambda rows: bar.advance(task, rows),
            )
        except PixguardError as exc:
            raise fail(exc) from None
    if index is not None:
        if not embeddings:
            raise typer.BadParameter("--index needs the embeddings", param_hint="--no-embeddings")
        try:
            with stderr.status(f"loading embeddings into {index}"):
                summary.indexed = load_into_index(output, index)
        except PixguardError as exc:
            raise fail(exc) from None
    _report(summary, output_format)


def _report(summary: ScanSummary, output_format: str) -> None:
    if output_format == "json":
        typer.echo(json.dumps(summary.to_dict()))
        return
    table = Table(title=f"scan of {summary.output}: {summary.rows} rows")
    table.add_column("count")
    table.add_column("value", justify="right")
    for group, counts in (
        ("label", summary.labels),
        ("action", summary.actions),
        ("error", summary.errors),
    ):
        for name, count in sorted(counts.items()):
            table.add_row(f"{group} {name}", str(count))
    table.add_row("scanned now", str(summary.scanned))
    table.add_row("skipped (already done)", str(summary.skipped))
    table.add_row("images/s", f"{summary.images_per_second:.1f}")
    if summary.indexed is not None:
        table.add_row("new index entries", str(summary.indexed))
    stderr.print(table)
