"""ONNX or OpenVINO IR models on OpenVINO (CPU), in fp32, bf16 or int8."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import ModelLoadError, RuntimeUnavailableError
from ..models import ModelSpec
from ._base import RuntimeOutput
from ._capabilities import cpu_precisions, openvino_core

__all__ = ["OpenVinoRuntime"]

_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


class OpenVinoRuntime:
    """An OpenVINO model compiled twice and kept warm.

    - One image runs on a copy compiled for latency (all cores on one request) at
      a static batch size of 1: nothing is padded or re-initialised per call.
    - A batch runs row by row on a copy compiled for throughput: OpenVINO's
      streams each take a row, in parallel. On a 2-core CPU this gives about a
      fifth more images per second than one latency request over the whole batch,
      needs no padding, and one compiled shape serves every batch size.

    ``precision`` sets the CPU plugin's inference precision hint; ``int8`` needs a
    model quantised at export time.
    """

    kind = "openvino"

    def __init__(self, model: Path, spec: ModelSpec, *, precision: str = "fp32") -> None:
        if precision not in _PRECISION_HINTS:
            raise RuntimeUnavailableError(f"unknown precision {precision!r}", source=spec.name)
        if precision not in cpu_precisions():
            raise RuntimeUnavailableError(
                f"this CPU does not run {precision} under OpenVINO", source=spec.name
            )
        self.spec = spec
        self.precision = precision
        self._core = openvino_core()
        self._precision_hint = _PRECISION_HINTS[precision]
        self._lock = threading.Lock()
        try:
            graph = self._core.read_model(str(model))
            sample_shape = [int(d) for d in graph.input(0).get_partial_shape()[1:].to_shape()]
            graph.reshape({0: [1, *sample_shape]})
            self._graph = graph
            self._single = self._compile("LATENCY").create_infer_request()
            self._single.infer({0: np.zeros([1, *sample_shape], np.float32)})
            from openvino import AsyncInferQueue

            throughput = self._compile("THROUGHPUT")
            requests = int(throughput.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self._rows = AsyncInferQueue(throughput, max(1, requests))
        except RuntimeUnavailableError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"OpenVINO could not compile the model: {exc}", source=spec.name
            ) from exc

    def _compile(self, hint: str) -> Any:
        config = {"INFERENCE_PRECISION_HINT": self._precision_hint, "PERFORMANCE_HINT": hint}
        return self._core.compile_model(self._graph, "CPU", config)

    def run(self, batch: np.ndarray) -> RuntimeOutput:
        # Shared inputs must stay alive and contiguous until the requests finish;
        # OpenVINO's own contiguous copy of a strided array does not.
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if len(batch) == 0:
            raise ValueError("an empty batch")
        with self._lock:
            if len(batch) == 1:
                results = self._single.infer({0: batch}, share_inputs=True)
                probabilities = np.array(results[0], dtype=np.float32)
                embeddings = np.array(results[1], dtype=np.float32)
            else:
                probabilities, embeddings = self._run_rows(batch)
        return RuntimeOutput(
            probabilities=probabilities, embeddings=embeddings.reshape(len(batch), -1)
        )

    def _run_rows(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        queue = self._rows
        outputs: list[Any] = [None] * len(batch)
        failures: list[BaseException] = []

        def collect(request: Any, row: int) -> None:
            try:
                outputs[row] = (
                    np.array(request.get_output_tensor(0).data, dtype=np.float32),
                    np.array(request.get_output_tensor(1).data, dtype=np.float32),
                )
            except BaseException as exc:  # raised again on the calling thread
                failures.append(exc)

        queue.set_callback(collect)
        try:
            for row in range(len(batch)):
                queue.start_async({0: batch[row : row + 1]}, userdata=row, share_inputs=True)
        finally:
            queue.wait_all()  # never leave requests running over a freed batch
        if failures:
            raise failures[0]
        return (
            np.concatenate([p for p, _ in outputs]),
            np.concatenate([e.reshape(1, -1) for _, e in outputs]),
        )
