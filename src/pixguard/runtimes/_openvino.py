"""ONNX or OpenVINO IR models on OpenVINO (CPU), in fp32, bf16 or int8."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .._exceptions import ModelLoadError, RuntimeUnavailableError
from ..models import ModelSpec
from ._base import RuntimeOutput

__all__ = ["OpenVinoRuntime", "openvino_precisions"]

_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def _core():
    try:
        import openvino
    except ImportError as exc:
        raise RuntimeUnavailableError("the openvino package is not installed") from exc
    return openvino.Core()


def openvino_precisions() -> tuple[str, ...]:
    """Precisions this CPU runs natively under OpenVINO."""
    try:
        capabilities = set(_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except RuntimeUnavailableError:
        return ()
    found = ["fp32"]
    if "BF16" in capabilities:
        found.append("bf16")
    if "INT8" in capabilities:
        found.append("int8")
    return tuple(found)


class OpenVinoRuntime:
    """A compiled OpenVINO model, kept warm; one infer request reused across calls.

    ``precision`` sets the CPU plugin's inference precision hint. ``int8`` needs a
    model that was quantised at export time (``pixguard export --precision int8``);
    the plugin then runs its int8 layers with VNNI/AMX.
    """

    kind = "openvino"

    def __init__(self, model: Path | bytes, spec: ModelSpec, *, precision: str = "fp32") -> None:
        if precision not in _PRECISION_HINTS:
            raise RuntimeUnavailableError(f"unknown precision {precision!r}", source=spec.name)
        if precision not in openvino_precisions():
            raise RuntimeUnavailableError(
                f"this CPU does not run {precision} under OpenVINO", source=spec.name
            )
        core = _core()
        try:
            if isinstance(model, bytes):
                graph = core.read_model(model=model, weights=b"")
            else:
                graph = core.read_model(str(model))
            self._compiled = core.compile_model(
                graph,
                "CPU",
                {
                    "INFERENCE_PRECISION_HINT": _PRECISION_HINTS[precision],
                    "PERFORMANCE_HINT": "LATENCY",
                },
            )
        except RuntimeUnavailableError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"OpenVINO could not compile the model: {exc}", source=spec.name
            ) from exc
        self.spec = spec
        self.precision = precision
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> RuntimeOutput:
        with self._lock:
            results = self._request.infer({0: batch}, share_inputs=True)
            probabilities = np.array(results[0], dtype=np.float32)
            embeddings = np.array(results[1], dtype=np.float32)
        return RuntimeOutput(
            probabilities=probabilities, embeddings=embeddings.reshape(len(batch), -1)
        )
