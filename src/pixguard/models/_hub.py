"""Hugging Face Hub access, through huggingface_hub and its cache only."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)

from .._exceptions import ModelLoadError, ModelNotCachedError, ModelNotFoundError
from ._folder import CONFIG_NAME, SAFE_WEIGHTS_NAME

__all__ = ["download_model_files", "is_cached"]

_OFFLINE_HINT = (
    "Use the bundled offline model with `--model opennsfw`, or a local model folder "
    "with `--model PATH`."
)


def is_cached(repo_id: str) -> bool:
    """True when config.json and the safetensors weights are in the local Hub cache."""
    return all(
        isinstance(try_to_load_from_cache(repo_id, filename), str)
        for filename in (CONFIG_NAME, SAFE_WEIGHTS_NAME)
    )


def download_model_files(repo_id: str, *, model_name: str) -> Path:
    """Make sure config.json and model.safetensors are cached; return the snapshot folder.

    Checking for ``model.safetensors`` here, before timm loads anything, is what
    keeps timm from falling back to a pickled ``pytorch_model.bin``.
    """
    try:
        hf_hub_download(repo_id, CONFIG_NAME)
        weights = hf_hub_download(repo_id, SAFE_WEIGHTS_NAME)
    except LocalEntryNotFoundError as exc:
        raise ModelNotCachedError(
            f"model {model_name!r} ({repo_id}) is not in the Hugging Face cache and the Hub "
            f"cannot be reached (offline, or HF_HUB_OFFLINE=1). {_OFFLINE_HINT}",
            source=model_name,
        ) from exc
    except GatedRepoError as exc:
        raise ModelLoadError(
            f"{repo_id} is gated: accept its terms on the Hub and log in "
            "(`hf auth login` or HF_TOKEN)",
            source=model_name,
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelNotFoundError(f"no Hub repository {repo_id}", source=model_name) from exc
    except EntryNotFoundError as exc:
        raise ModelLoadError(
            f"{repo_id} has no {CONFIG_NAME} + {SAFE_WEIGHTS_NAME}; pixguard loads "
            "safetensors weights only",
            source=model_name,
        ) from exc
    except HfHubHTTPError as exc:
        raise ModelLoadError(
            f"downloading {repo_id} failed: {exc}. {_OFFLINE_HINT}", source=model_name
        ) from exc
    return Path(weights).parent
