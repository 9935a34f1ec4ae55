"""Hugging Face Hub access, through huggingface_hub and its cache only."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
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
    "with `--model PATH`; set HF_HUB_OFFLINE=1 to skip the Hub at once."
)
#: How long the Hub gets to accept a connection before pixguard treats it as
#: unreachable (huggingface_hub's own retries would take tens of seconds).
HUB_PROBE_TIMEOUT_S = 3.0


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the Hub endpoint accepts a TCP connection within ``timeout``."""
    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlsplit(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


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
    # Unreachable Hub: the cache alone answers, at once, instead of after retries.
    local_only = not hub_reachable()
    try:
        weights = hf_hub_download(
            repo_id, SAFE_WEIGHTS_NAME, revision=revision, local_files_only=local_only
        )
        snapshot = Path(weights).parent
        config = hf_hub_download(
            repo_id, CONFIG_NAME, revision=revision, local_files_only=local_only
        )
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
