"""pixguard's on-disk cache for converted models and parity verdicts."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["cache_root", "cached_artifact", "file_digest", "read_json", "write_json_atomic"]

_CACHE_ENV = "PIXGUARD_CACHE_DIR"
_DIGEST_CHUNK = 1 << 20


def cache_root() -> Path:
    """``$PIXGUARD_CACHE_DIR``, else ``$XDG_CACHE_HOME/pixguard``, else ``~/.cache/pixguard``."""
    if os.environ.get(_CACHE_ENV):
        return Path(os.environ[_CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pixguard"


def file_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            while chunk := handle.read(_DIGEST_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=2)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp files are private; the result keeps the file's previous mode, or
        # the usual one for a new file.
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
        os.chmod(name, mode)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
