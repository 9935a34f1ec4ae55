"""Runtimes: loaded models behind one ``run(batch) -> probabilities, embeddings`` call."""

from ._base import Runtime, RuntimeOutput
from ._loaders import load_runtime, register_loader
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
