"""pixguard's on-disk cache for converted models and parity verdicts."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["cache_root", "cached_artifact", "read_json"]

_CACHE_ENV = "PIXGUARD_CACHE_DIR"


def cache_root() -> Path:
    """``$PIXGUARD_CACHE_DIR``, else ``$XDG_CACHE_HOME/pixguard``, else ``~/.cache/pixguard``."""
    if os.environ.get(_CACHE_ENV):
        return Path(os.environ[_CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pixguard"


def cached_artifact(key: str, build: Callable[[Path], None]) -> Path:
    """The cache folder for ``key``, built once by ``build(tmp_folder)``.

    The folder is built under a temporary name and renamed into place, so a crash
    mid-build never leaves a half-written artifact that later loads would trust.
    """
    target = cache_root() / key
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build(scratch)
        try:
            scratch.rename(target)
        except OSError:
            if not target.is_dir():  # not a concurrent builder winning the race
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
