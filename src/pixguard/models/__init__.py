"""Model specs: a registry of named models, and the model-folder contract."""

from ._builtin import DEFAULT_MODEL, MARQO_NSFW_384, OPENNSFW
from ._folder import (
    CONFIG_NAME,
    SAFE_WEIGHTS_NAME,
    find_safe_weights,
    read_config,
    spec_from_config,
)
from ._hub import download_model_files, is_cached
from ._registry import get_model_spec, list_models, register_model
from ._resolve import resolve_model
from ._sources import ModelStatus, bundled_file, locate_folder, model_status
from ._spec import ModelSpec

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_MODEL",
    "MARQO_NSFW_384",
    "OPENNSFW",
    "SAFE_WEIGHTS_NAME",
    "ModelSpec",
    "ModelStatus",
    "bundled_file",
    "download_model_files",
    "find_safe_weights",
    "get_model_spec",
    "is_cached",
    "list_models",
    "locate_folder",
    "model_status",
    "read_config",
    "register_model",
    "resolve_model",
    "spec_from_config",
]
