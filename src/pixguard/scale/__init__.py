"""Scale: ``scan`` a collection (folders, lists, ``s3://``) into a Parquet dataset,
on this machine or on a Ray cluster, with the same batch function."""

from .._exceptions import ScanError
from ._batch import ScanBatch, ScanOptions, output_schema
from ._bulk import load_into_index
from ._output import DEFAULT_ROWS_PER_FILE, ScanSummary
from ._ray import actor_pool_options
from ._scan import ENGINES, scan
from ._sources import ObjectStoreOptions, ScanInput, list_inputs, read_input

__all__ = [
    "DEFAULT_ROWS_PER_FILE",
    "ENGINES",
    "ObjectStoreOptions",
    "ScanBatch",
    "ScanError",
    "ScanInput",
    "ScanOptions",
    "ScanSummary",
    "actor_pool_options",
    "list_inputs",
    "load_into_index",
    "output_schema",
    "read_input",
    "scan",
]
