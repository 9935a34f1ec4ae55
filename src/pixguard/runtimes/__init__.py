"""Runtimes: loaded models behind one ``run(batch) -> probabilities, embeddings`` call."""

from typing import TYPE_CHECKING, Any

from ._base import Runtime, RuntimeOutput
from ._loaders import load_runtime, register_loader

if TYPE_CHECKING:
    from ._opennsfw import OpenNsfwRuntime
    from ._timm import TimmRuntime

__all__ = [
    "OpenNsfwRuntime",
    "Runtime",
    "RuntimeOutput",
    "TimmRuntime",
    "load_runtime",
    "register_loader",
]

_LAZY = {"TimmRuntime": "._timm", "OpenNsfwRuntime": "._opennsfw"}


def __getattr__(name: str) -> Any:
    # torch and onnxruntime are heavy imports: load them only when asked for.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
