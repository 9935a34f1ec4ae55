"""Hugging Face Hub access, through huggingface_hub and its cache only."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .._exceptions import ModelLoadError, ModelNotCachedError, ModelNotFoundError
from ._folder import CONFIG_NAME, SAFE_WEIGHTS_NAME

__all__ = ["download_model_files", "is_cached", "split_revision"]

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


def split_revision(repo: str) -> tuple[str, str | None]:
    """``owner/name@revision`` -> (``owner/name``, ``revision``)."""
    repo_id, _, revision = repo.partition("@")
    return repo_id, revision or None


def download_model_files(repo: str, *, model_name: str) -> Path:
    """Make sure config.json and model.safetensors are cached; return the snapshot folder.

    ``repo`` is ``owner/name`` or ``owner/name@revision``. Both files come from
    one snapshot, and the caller loads exactly that folder.
    """
    repo_id, revision = split_revision(repo)
    try:
        weights = hf_hub_download(repo_id, SAFE_WEIGHTS_NAME, revision=revision)
        snapshot = Path(weights).parent
        config = hf_hub_download(repo_id, CONFIG_NAME, revision=revision)
    except HFValidationError as exc:
        raise ModelNotFoundError(
            f"{repo!r} is not a valid Hub repository id", source=model_name
        ) from exc
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
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise ModelNotFoundError(
            f"no Hub repository or revision {repo}", source=model_name
        ) from exc
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
    if Path(config).parent != snapshot:
        raise ModelLoadError(f"{repo} changed while downloading; try again", source=model_name)
    return snapshot
