"""``scan``: moderate a collection into a Parquet dataset, locally or on Ray Data."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .._exceptions import ScanError
from ..models import resolve_model
from ._batch import ScanOptions, output_columns
from ._local import run_local
from ._output import (
    DEFAULT_ROWS_PER_FILE,
    ScanSummary,
    check_manifest,
    done_paths,
    new_run_id,
    summarise,
)
from ._sources import ScanInput, list_inputs

__all__ = ["ENGINES", "scan"]

ENGINES = ("local", "ray")


def scan(
    sources: Sequence[str],
    output: str | os.PathLike[str],
    options: ScanOptions,
    *,
    engine: str = "local",
    ray_address: str | None = None,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    resume: bool = True,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    on_listed: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ScanSummary:
    """Classify every input of ``sources`` into Parquet parts under ``output``.

    One row per input (a bad file is a row with its error code; it never fails the
    job). With ``resume`` (the default), inputs already in ``output`` are skipped,
    so rerunning a crashed or stopped scan does only its unfinished part.
    ``on_listed`` gets the number of inputs to scan; ``on_progress`` the rows done
    (local engine; Ray shows its own progress).
    """
    if engine not in ENGINES:
        raise ScanError(f"unknown engine {engine!r} (use {' or '.join(ENGINES)})")
    if workers < 1 or options.batch_size < 1 or rows_per_file < 1:
        raise ScanError("workers, batch size and rows per file must be at least 1")
    output = Path(output)
    inputs = list_inputs(list(sources), options.store)
    if not inputs:
        raise ScanError("the sources hold no image or video files", source=", ".join(sources))
    _check_model_and_policy(options)
    check_manifest(output, _manifest(options), resume=resume)
    done = done_paths(output, output_columns(options.embeddings))
    todo: list[ScanInput] = [item for item in inputs if item.path not in done]
    if on_listed is not None:
        on_listed(len(todo))
    started = time.perf_counter()
    if todo and engine == "local":
        run_local(
            todo,
            options,
            output,
            new_run_id(),
            rows_per_file=rows_per_file,
            on_progress=on_progress,
        )
    elif todo:
        from ._ray import run_ray

        run_ray(
            todo,
            options,
            output,
            address=ray_address,
            workers=workers,
            cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker,
            rows_per_file=rows_per_file,
        )
    seconds = time.perf_counter() - started
    return summarise(output, scanned=len(todo), skipped=len(inputs) - len(todo), seconds=seconds)


def _check_model_and_policy(options: ScanOptions) -> None:
    """Fail here, with the typed error, before any worker starts: an unknown model,
    or a policy naming labels the model lacks."""
    spec = resolve_model(options.model)
    policy = options.load_policy()
    if policy is not None:
        policy.check_labels(spec.name, spec.label_names)


def _manifest(options: ScanOptions) -> dict[str, object]:
    """What must stay the same for rows of two runs to belong in one dataset."""
    policy = options.load_policy()
    return {
        "model": options.model,
        "runtime": options.runtime,
        "precision": options.precision,
        "threshold": options.threshold,
        "embeddings": options.embeddings,
        "policy": None if policy is None else policy.version,
        "video_sampling": dataclasses.asdict(options.sampling),
    }
