"""The one batch function both engines run: read within the byte limit, hash,
decode with pixguard's limits, classify, and turn each input into one output row.

It is a callable class so Ray can build it once per actor (the model loads once);
the local engine builds one and calls it the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .._exceptions import PixguardError
from ..classify import DEFAULT_BATCH_SIZE, Classifier, Prediction, PreparedInput
from ..images import DecodeLimits
from ..policy import Policy
from ._sources import ObjectStoreOptions, read_input

__all__ = ["PASSES_PER_CALL", "ScanBatch", "ScanOptions", "output_schema"]

#: Inputs read and decoded at once per engine worker; reading is mostly I/O wait.
DEFAULT_READ_THREADS = 4
#: Forward passes per call of the batch function: enough for reading/decoding to
#: overlap inference inside one call, few enough to keep a call's memory small.
PASSES_PER_CALL = 4


@dataclass(frozen=True)
class ScanOptions:
    """Everything a worker needs to rebuild the scan's classifier (plain, picklable)."""

    model: str
    runtime: str = "auto"
    precision: str | None = None
    threshold: float | None = None
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    batch_size: int = DEFAULT_BATCH_SIZE
    embeddings: bool = True
    store: ObjectStoreOptions = field(default_factory=ObjectStoreOptions)
    read_threads: int = DEFAULT_READ_THREADS
    #: The policy file's bytes (a worker rebuilds the Policy from them), for ``action``.
    policy: bytes | None = None
    policy_source: str = "<policy>"

    def load_policy(self) -> Policy | None:
        if self.policy is None:
            return None
        return Policy.from_bytes(self.policy, source=self.policy_source)

    def load_classifier(self) -> Classifier:
        return Classifier.load(
            self.model,
            threshold=self.threshold,
            limits=self.limits,
            runtime=self.runtime,
            precision=self.precision,
        )


def output_schema(embedding_dim: int | None) -> pa.Schema:
    """One row per input; ``embedding`` only when embeddings are kept."""
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("size", pa.int64()),
        pa.field("sha256", pa.string()),
        pa.field("label", pa.string()),
        pa.field("nsfw_score", pa.float64()),
        pa.field("probabilities", pa.map_(pa.string(), pa.float64())),
    ]
    if embedding_dim is not None:
        fields.append(pa.field("embedding", pa.list_(pa.float32(), embedding_dim)))
    fields += [
        pa.field("model", pa.string()),
        pa.field("runtime", pa.string()),
        pa.field("action", pa.string()),
        pa.field("error_code", pa.string()),
        pa.field("error_message", pa.string()),
    ]
    return pa.schema(fields)


@dataclass
class _Read:
    path: str
    size: int | None
    sha256: str | None
    prepared: PreparedInput


class ScanBatch:
    """``batch`` (a table with ``path`` and ``size``) in, one output row per input out."""

    def __init__(self, options: ScanOptions) -> None:
        self.options = options
        self.classifier = options.load_classifier()
        self.policy = options.load_policy()
        if self.policy is not None:
            self.policy.check_labels(self.classifier.name, self.classifier.spec.label_names)
        dim = self.classifier.embedding_dim if options.embeddings else None
        self.schema = output_schema(dim)
        self._pool = ThreadPoolExecutor(options.read_threads, thread_name_prefix="pixguard-scan")
        self._ahead = ThreadPoolExecutor(1, thread_name_prefix="pixguard-scan-ahead")

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Rows for ``batch``, in order, processed in forward passes of ``batch_size``:
        reading and decoding the next pass's inputs overlaps inference on the
        current one, so the model is not left idle waiting for I/O."""
        size = self.options.batch_size
        pieces = [batch.slice(start, size) for start in range(0, batch.num_rows, size)]
        tables = []
        upcoming = self._ahead.submit(self.prepare, pieces[0]) if pieces else None
        for position in range(len(pieces)):
            assert upcoming is not None
            reads = upcoming.result()
            if position + 1 < len(pieces):
                upcoming = self._ahead.submit(self.prepare, pieces[position + 1])
            tables.append(self.finish(reads))
        return pa.concat_tables(tables) if tables else self.schema.empty_table()

    def close(self) -> None:
        self._ahead.shutdown(wait=True)
        self._pool.shutdown(wait=True)
        self.classifier.close()

    # -- stage 1: I/O and decoding (threads) ---------------------------------------

    def prepare(self, batch: pa.Table) -> list[_Read]:
        paths = batch.column("path").to_pylist()
        sizes = batch.column("size").to_pylist()
        return list(self._pool.map(self._read_one, paths, sizes))

    def _read_one(self, path: str, size: int | None) -> _Read:
        try:
            data = read_input(path, self.options.store, self.options.limits.max_bytes)
        except PixguardError as exc:
            return _Read(path, size, None, PreparedInput(path, error=exc))
        prepared = self.classifier.prepare(data)
        if prepared.error is not None:
            prepared.error.source = path  # name the input, not "<bytes>"
        prepared.source = path
        return _Read(path, len(data), hashlib.sha256(data).hexdigest(), prepared)

    # -- stage 2: inference and rows --------------------------------------------------

    def finish(self, reads: Sequence[_Read]) -> pa.Table:
        predictions = self.classifier.predict_prepared(
            [read.prepared for read in reads], batch_size=self.options.batch_size
        )
        rows = [self._row(read, p) for read, p in zip(reads, predictions, strict=True)]
        return pa.Table.from_pylist(rows, schema=self.schema)

    def _row(self, read: _Read, prediction: Prediction) -> dict[str, Any]:
        error = prediction.error
        row: dict[str, Any] = {
            "path": read.path,
            "size": read.size,
            "sha256": read.sha256,
            "label": prediction.label,
            "nsfw_score": prediction.nsfw_score,
            "probabilities": list(prediction.probabilities.items()) if prediction.ok else None,
            "model": prediction.model,
            "runtime": prediction.runtime,
            "action": self.policy.decide(prediction).action.value if self.policy else None,
            "error_code": error.code if error is not None else None,
            "error_message": str(error) if error is not None else None,
        }
        if "embedding" in self.schema.names:
            row["embedding"] = (
                np.asarray(prediction.embedding, dtype=np.float32)
                if prediction.embedding is not None
                else None
            )
        return row
