"""Runtimes: loaded models behind one ``run(batch) -> probabilities, embeddings`` call.

torch (timm eager, TorchScript), onnxruntime and OpenVINO, in fp32, bf16 or int8,
chosen explicitly or by ``auto`` behind the parity gate.
"""

from typing import TYPE_CHECKING, Any

from ._base import Runtime, RuntimeOutput
from ._explain import HeatmapMethod, OcclusionMethod, nsfw_log_odds, open_heatmap_method
from ._loaders import (
    ARTIFACT_FILES,
    AUTO_ORDER,
    PRECISIONS,
    RUNTIMES,
    LoadedRuntime,
    ModelArtifacts,
    load_runtime,
    open_runtime,
    register_loader,
)
from ._parity import PARITY_TOLERANCE, ParityReport, check_parity, parity_images

if TYPE_CHECKING:
    from ._onnx import OnnxRuntime
    from ._openvino import OpenVinoRuntime
    from ._timm import TimmRuntime, TorchScriptRuntime

__all__ = [
    "ARTIFACT_FILES",
    "AUTO_ORDER",
    "PARITY_TOLERANCE",
    "PRECISIONS",
    "RUNTIMES",
    "HeatmapMethod",
    "LoadedRuntime",
    "ModelArtifacts",
    "OcclusionMethod",
    "OnnxRuntime",
    "OpenVinoRuntime",
    "ParityReport",
    "Runtime",
    "RuntimeOutput",
    "TimmRuntime",
    "TorchScriptRuntime",
    "check_parity",
    "load_runtime",
    "nsfw_log_odds",
    "open_heatmap_method",
    "open_runtime",
    "parity_images",
    "register_loader",
]

_LAZY = {
    "TimmRuntime": "._timm",
    "TorchScriptRuntime": "._timm",
    "OnnxRuntime": "._onnx",
    "OpenVinoRuntime": "._openvino",
}


def __getattr__(name: str) -> Any:
    # torch, onnxruntime and openvino are heavy imports: load them only when asked for.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
