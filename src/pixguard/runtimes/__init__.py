"""Runtimes: loaded models behind one ``run(batch) -> probabilities, embeddings`` call.

torch (timm eager, TorchScript), onnxruntime and OpenVINO, in fp32, bf16 or int8,
chosen explicitly or by ``auto`` behind the parity gate.

Modules: ``_artifacts`` (where the weights are, TorchScript trust), ``_cache`` (the
conversion cache), ``_dispatch`` (open one runtime), ``_parity`` (the gate),
``_verdicts`` (cached and re-checked verdicts), ``_auto`` (``load_runtime``).
"""

from typing import TYPE_CHECKING, Any

from ._artifacts import ARTIFACT_FILES, ModelArtifacts, record_trusted_torchscript
from ._auto import AUTO_ORDER, LoadedRuntime, load_runtime
from ._base import Runtime, RuntimeOutput
from ._cache import cache_root
from ._capabilities import bf16_supported, cpu_precisions
from ._dispatch import (
    PRECISIONS,
    RUNTIMES,
    open_on,
    open_reference,
    open_runtime,
    register_loader,
)
from ._explain import HeatmapMethod, OcclusionMethod, nsfw_log_odds, open_heatmap_method
from ._parity import (
    PARITY_TOLERANCE,
    ParityReference,
    ParityReport,
    check_parity,
    compare_with_reference,
    parity_images,
    parity_reference,
)

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
    "ParityReference",
    "ParityReport",
    "Runtime",
    "RuntimeOutput",
    "TimmRuntime",
    "TorchScriptRuntime",
    "bf16_supported",
    "cache_root",
    "check_parity",
    "compare_with_reference",
    "cpu_precisions",
    "load_runtime",
    "nsfw_log_odds",
    "open_heatmap_method",
    "open_on",
    "open_reference",
    "open_runtime",
    "parity_images",
    "parity_reference",
    "record_trusted_torchscript",
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
