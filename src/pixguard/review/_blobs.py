"""The queued images' bytes, content-addressed: one private file per sha256."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .._files import atomic_file

__all__ = ["Blobs"]

_DIR_MODE = 0o700


@dataclass
class Blobs:
    """Image bytes by sha256, in private files (0600 in a 0700 folder)."""

    root: Path

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, _DIR_MODE)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, sha256: str, data: bytes) -> None:
        target = self.path(sha256)
        if target.exists():
            return
        target.parent.mkdir(mode=_DIR_MODE, exist_ok=True)
        with atomic_file(target, private=True) as temporary:
            temporary.write_bytes(data)

    def get(self, sha256: str) -> bytes | None:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)
