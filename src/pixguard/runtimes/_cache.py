"""pixguard's on-disk cache for converted models and parity verdicts."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._files import atomic_folder

__all__ = ["cache_root", "cached_artifact", "read_json"]

_CACHE_ENV = "PIXGUARD_CACHE_DIR"


def cache_root() -> Path:
    """``$PIXGUARD_CACHE_DIR``, else ``$XDG_CACHE_HOME/pixguard``, else ``~/.cache/pixguard``."""
    if os.environ.get(_CACHE_ENV):
        return Path(os.environ[_CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pixguard"


def cached_artifact(key: str, build: Callable[[Path], object]) -> Path:
    """The cache folder for ``key``, built once by ``build(tmp_folder)``.

    The folder is built under a temporary name and renamed into place, so a crash
    mid-build never leaves a half-written artifact that later loads would trust.
    """
    target = cache_root() / key
    if target.is_dir():
        return target
    with atomic_folder(target) as scratch:
        build(scratch)
    return target


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
