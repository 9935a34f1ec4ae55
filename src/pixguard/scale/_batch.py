"""The one batch function both engines run: read within the byte limit, hash,
decode with pixguard's limits, classify, and turn each input into one output row.

Videos (by suffix, as ``classify`` routes them) go through
:meth:`Classifier.predict_video`: one row each, with the highest-scoring frame's
score, probabilities and embedding, its ``timestamp``, the ``duration``,
``frames_classified`` and the ``timeline``; with a policy, the action follows the
worst segment. Image rows leave those columns null.

It is a callable class so Ray can build it once per actor (the model loads once);
the local engine builds one and calls it the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

from .._exceptions import PixguardError, VideoTooLargeError
from ..classify import (
    DEFAULT_BATCH_SIZE,
    Classifier,
    Prediction,
    PreparedInput,
    VideoPrediction,
)
from ..images import DecodeLimits, VideoInput, VideoLimits, VideoSampling, is_video_path
from ..policy import Policy, decide_worst
from ._sources import ObjectStoreOptions, hash_local_file, is_local, read_input

__all__ = [
    "PASSES_PER_CALL",
    "TIMELINE_TYPE",
    "ScanBatch",
    "ScanOptions",
    "output_columns",
    "output_schema",
]

#: Inputs read and decoded at once per engine worker; reading is mostly I/O wait.
DEFAULT_READ_THREADS = 4
#: Forward passes per call of the batch function: enough for reading/decoding to
#: overlap inference inside one call, few enough to keep a call's memory small.
PASSES_PER_CALL = 4
#: A video's ``timeline`` column: one struct per sampled frame, as in the JSON output.
TIMELINE_TYPE = pa.list_(
    pa.struct(
        [
            pa.field("start", pa.float64()),
            pa.field("end", pa.float64()),
            pa.field("nsfw_score", pa.float64()),
        ]
    )
)


@dataclass(frozen=True)
class ScanOptions:
    """Everything a worker needs to rebuild the scan's classifier (plain, picklable)."""

    model: str
    runtime: str = "auto"
    precision: str | None = None
    threshold: float | None = None
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    #: Videos: bounds (bytes, duration, pixels, frames) and which frames are classified.
    video_limits: VideoLimits = field(default_factory=VideoLimits)
    sampling: VideoSampling = field(default_factory=VideoSampling)
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
    """One row per input; ``embedding`` only when embeddings are kept. The video
    columns (``timestamp``, ``duration``, ``frames_classified``, ``timeline``)
    are null for images and for inputs that failed."""
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
        pa.field("timestamp", pa.float64()),
        pa.field("duration", pa.float64()),
        pa.field("frames_classified", pa.int64()),
        pa.field("timeline", TIMELINE_TYPE),
        pa.field("model", pa.string()),
        pa.field("runtime", pa.string()),
        pa.field("action", pa.string()),
        pa.field("error_code", pa.string()),
        pa.field("error_message", pa.string()),
    ]
    return pa.schema(fields)


def output_columns(embeddings: bool) -> list[str]:
    """The output's column names, which a resumed scan's parts must have."""
    return output_schema(1 if embeddings else None).names  # the size is not in a name


@dataclass(frozen=True)
class _Read:
    path: str
    size: int | None
    sha256: str | None
    #: An image's model inputs, or the error of any input that failed before
    #: decoding; None for a video still to be decoded (in stage 2, by the model).
    prepared: PreparedInput | None


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
        if is_video_path(path):
            return self._read_video(path, size)
        try:
            data = read_input(path, self.options.store, self.options.limits.max_bytes)
        except PixguardError as exc:
            return _Read(path, size, None, PreparedInput(path, error=exc))
        prepared = self.classifier.prepare(data)
        if prepared.error is not None:
            prepared.error.source = path  # name the input, not "<bytes>"
        prepared.source = path
        return _Read(path, len(data), hashlib.sha256(data).hexdigest(), prepared)

    def _read_video(self, path: str, size: int | None) -> _Read:
        """A local video is hashed here, in chunks, and decoded from its file in
        stage 2, so it is never held whole in memory; an object store's is read in
        stage 2, one at a time."""
        if not is_local(path):
            return _Read(path, size, None, None)
        try:
            size, digest = hash_local_file(
                path, self.options.video_limits.max_bytes, VideoTooLargeError
            )
        except PixguardError as exc:
            return _Read(path, size, None, PreparedInput(path, error=exc))
        return _Read(path, size, digest, None)

    # -- stage 2: inference and rows --------------------------------------------------

    def finish(self, reads: Sequence[_Read]) -> pa.Table:
        prepared = [read.prepared for read in reads if read.prepared is not None]
        predictions = iter(
            self.classifier.predict_prepared(prepared, batch_size=self.options.batch_size)
        )
        rows = []
        for read in reads:
            if read.prepared is None:
                read, prediction = self._predict_video(read)
            else:
                prediction = next(predictions)
            rows.append(self._row(read, prediction))
        return pa.Table.from_pylist(rows, schema=self.schema)

    def _predict_video(self, read: _Read) -> tuple[_Read, Prediction]:
        source: VideoInput = read.path
        if not is_local(read.path):
            try:
                data = read_input(
                    read.path,
                    self.options.store,
                    self.options.video_limits.max_bytes,
                    VideoTooLargeError,
                )
            except PixguardError as exc:
                failed = PreparedInput(read.path, error=exc)
                return read, self.classifier.predict_prepared([failed])[0]
            read = replace(read, size=len(data), sha256=hashlib.sha256(data).hexdigest())
            source = data
        prediction = self.classifier.predict_video(
            source,
            sampling=self.options.sampling,
            limits=self.options.video_limits,
            batch_size=self.options.batch_size,
        )
        if prediction.error is not None:
            prediction.error.source = read.path  # name the input, not "<bytes>"
        return read, prediction

    def _row(self, read: _Read, prediction: Prediction) -> dict[str, Any]:
        error = prediction.error
        row: dict[str, Any] = {
            "path": read.path,
            "size": read.size,
            "sha256": read.sha256,
            "label": prediction.label,
            "nsfw_score": prediction.nsfw_score,
            "probabilities": list(prediction.probabilities.items()) if prediction.ok else None,
            **_video_columns(prediction),
            "model": prediction.model,
            "runtime": prediction.runtime,
            "action": decide_worst(self.policy, prediction).action.value if self.policy else None,
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


def _video_columns(prediction: Prediction) -> dict[str, Any]:
    """A read video's ``timestamp``, ``duration``, ``frames_classified`` and
    ``timeline``; nulls for images and failed inputs."""
    if not isinstance(prediction, VideoPrediction) or not prediction.ok:
        return dict.fromkeys(("timestamp", "duration", "frames_classified", "timeline"))
    return {
        "timestamp": prediction.timestamp,
        "duration": prediction.duration,
        "frames_classified": prediction.frames_classified,
        "timeline": [segment.to_dict() for segment in prediction.timeline],
    }
