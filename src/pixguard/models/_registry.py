"""The registry of named models: one place to add a model, created by name."""

from __future__ import annotations

from ._spec import ModelSpec

__all__ = ["get_model_spec", "list_models", "register_model"]

_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add ``spec`` under ``spec.name``. Re-registering a name needs ``replace=True``."""
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"a model named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_model_spec(name: str) -> ModelSpec | None:
    return _REGISTRY.get(name)


def list_models() -> list[ModelSpec]:
    return list(_REGISTRY.values())
