"""The Ray engine: the same batch function on a Ray Data actor pool.

Each actor builds one :class:`ScanBatch` (the model loads once per actor) and
reads, decodes and classifies its batches; Ray writes the rows with
``write_parquet``. Inputs come from the scan's listing, so each worker reads its
own bytes within pixguard's byte limit (``read_images`` would fail a whole block
on one bad file).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._exceptions import ScanError
from ._batch import PASSES_PER_CALL, ScanBatch, ScanOptions
from ._sources import ScanInput, listing_table

__all__ = ["actor_pool_options", "run_ray"]

BLOCKS_PER_WORKER = 4


def actor_pool_options(workers: int) -> dict[str, Any]:
    """``map_batches`` arguments for a fixed pool of ``workers`` actors.

    Ray 2.9 added ``concurrency=``; older releases take
    ``compute=ActorPoolStrategy(...)``. This is the only place that knows.
    """
    import ray.data

    if "concurrency" in inspect.signature(ray.data.Dataset.map_batches).parameters:
        return {"concurrency": workers}
    return {"compute": ray.data.ActorPoolStrategy(size=workers)}


def connect(address: str | None) -> None:
    """Join the cluster at ``address`` (``auto``, ``ray://HOST:10001``), or start a
    local one when none is given."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ScanError(
            "the Ray engine needs Ray Data: pip install 'pixguard[ray]'", source="--engine ray"
        ) from exc

    if ray.is_initialized():
        return
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ScanError(f"cannot connect to Ray: {exc}", source=address or "local") from exc


def run_ray(
    inputs: Sequence[ScanInput],
    options: ScanOptions,
    output: Path,
    *,
    address: str | None,
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    rows_per_file: int,
) -> int:
    connect(address)
    import ray.data

    listing = listing_table(inputs)
    per_call = options.batch_size * PASSES_PER_CALL
    # About four blocks per worker, so a slow node takes fewer of them.
    blocks = max(1, min(len(inputs) // per_call, workers * BLOCKS_PER_WORKER))
    dataset = ray.data.from_arrow(listing).repartition(blocks)
    rows = dataset.map_batches(
        ScanBatch,
        fn_constructor_args=(options,),
        batch_size=per_call,
        batch_format="pyarrow",
        num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker,
        **actor_pool_options(workers),
    )
    rows.write_parquet(
        str(output.absolute()),
        min_rows_per_file=rows_per_file,
    )
    return len(inputs)
