"""ONNX models on onnxruntime (CPU)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .._exceptions import ModelLoadError
from ..models import ModelSpec
from ._base import RuntimeOutput

__all__ = ["OnnxRuntime"]


class OnnxRuntime:
    """Runs a graph whose first two outputs are (probabilities, embedding)."""

    kind = "onnxruntime"

    def __init__(
        self,
        model: Path | bytes,
        spec: ModelSpec,
        *,
        precision: str = "fp32",
        threads: int | None = None,
    ) -> None:
        # The graph itself holds the precision (an int8 export is quantised); this
        # names it for predictions and reports.
        self.precision = precision
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        source = str(model) if isinstance(model, Path) else model
        try:
            self._session = ort.InferenceSession(
                source, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelLoadError(
                f"onnxruntime could not load the model: {exc}", source=spec.name
            ) from exc
        self.spec = spec
        self._input = self._session.get_inputs()[0].name
        self._outputs = [output.name for output in self._session.get_outputs()[:2]]
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> RuntimeOutput:
        with self._lock:
            probabilities, embeddings = self._session.run(self._outputs, {self._input: batch})
        return RuntimeOutput(
            probabilities=np.asarray(probabilities, dtype=np.float32),
            embeddings=np.asarray(embeddings, dtype=np.float32).reshape(len(batch), -1),
        )
