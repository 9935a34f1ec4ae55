"""Where a spec's weights are, and whether they are here."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Literal

from .._exceptions import ModelConfigError, ModelNotFoundError
from ._hub import download_model_files, is_cached
from ._spec import ModelSpec

__all__ = ["ModelStatus", "bundled_file", "locate_folder", "model_status"]

ModelStatus = Literal["cached", "bundled", "local", "missing"]


def bundled_file(spec: ModelSpec) -> Path:
    """The file a ``bundled`` spec points at (``package:resource``) inside site-packages."""
    package, _, resource = spec.location.partition(":")
    try:
        path = importlib.resources.files(package).joinpath(resource)
    except ModuleNotFoundError as exc:
        raise ModelNotFoundError(
            f"the package {package!r} that bundles this model is not installed",
            source=spec.name,
        ) from exc
    if not path.is_file():
        raise ModelNotFoundError(
            f"{resource} is missing from the installed package {package!r}", source=spec.name
        )
    return Path(str(path))


def model_status(spec: ModelSpec) -> ModelStatus:
    """``cached``/``bundled``/``local`` when loadable without a network, else ``missing``."""
    if spec.source == "hf-hub":
        return "cached" if is_cached(spec.location) else "missing"
    if spec.source == "bundled":
        try:
            bundled_file(spec)
        except ModelNotFoundError:
            return "missing"
        return "bundled"
    return "local" if Path(spec.location).is_dir() else "missing"


def locate_folder(spec: ModelSpec) -> Path:
    """The local folder holding ``spec``'s config and weights (downloading Hub models)."""
    if spec.source == "hf-hub":
        return download_model_files(spec.location, model_name=spec.name)
    if spec.source == "local-dir":
        return Path(spec.location)
    raise ModelConfigError(f"a {spec.source} model has no model folder", source=spec.name)
