"""Turn what a user typed (a name, a folder, ``hf-hub:owner/repo``) into a spec."""

from __future__ import annotations

import os
from pathlib import Path

from .._exceptions import ModelNotFoundError
from ._builtin import DEFAULT_MODEL
from ._folder import read_config, spec_from_config
from ._hub import download_model_files
from ._registry import get_model_spec, list_models
from ._spec import ModelSpec

__all__ = ["resolve_model"]

_HUB_PREFIX = "hf-hub:"


def resolve_model(name_or_path: str | os.PathLike[str] | None) -> ModelSpec:
    """The spec for a registry name, a local model folder, or ``hf-hub:owner/repo``.

    Unknown names are an error: pixguard never substitutes another model.
    """
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    text = os.fspath(name_or_path)
    spec = get_model_spec(text)
    if spec is not None:
        return spec
    if text.startswith(_HUB_PREFIX):
        repo_id = text[len(_HUB_PREFIX) :]
        folder = download_model_files(repo_id, model_name=text)
        return spec_from_config(read_config(folder), name=text, source="hf-hub", location=repo_id)
    path = Path(text).expanduser()
    if path.exists() or os.sep in text or text.startswith("."):
        # Named by the absolute path, so the same folder is the same model however
        # it was typed (indexes compare model names).
        location = str(path.resolve())
        return spec_from_config(
            read_config(path), name=location, source="local-dir", location=location
        )
    known = ", ".join(spec.name for spec in list_models())
    raise ModelNotFoundError(
        f"unknown model; use a registered name ({known}), a model folder path, "
        "or hf-hub:owner/repo",
        source=text,
    )
