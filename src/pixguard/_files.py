"""File helpers every layer shares: streamed hashing and atomic writes.

Atomic writes go to a temporary file beside the target, are fsynced and then
renamed into place, so a crash never leaves a half-written file behind; the result
keeps the target's previous permissions, or the usual ones for a new file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_binary_file", "atomic_text_file", "file_sha256", "write_json_atomic"]

_CHUNK = 1 << 20


def file_sha256(*paths: str | os.PathLike[str]) -> str:
    """SHA-256 of the files' bytes, one after another, read in chunks."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _mode_for(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_text_file(path: Path) -> Iterator[IO[str]]:
    """A text stream that becomes ``path`` only when the block ends without error."""
    with _atomic_file(path, binary=False) as stream:
        yield stream


@contextmanager
def atomic_binary_file(path: Path) -> Iterator[IO[bytes]]:
    """A binary stream that becomes ``path`` only when the block ends without error."""
    with _atomic_file(path, binary=True) as stream:
        yield stream


@contextmanager
def _atomic_file(path: Path, *, binary: bool) -> Iterator[Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        opened = (
            os.fdopen(descriptor, "wb")
            if binary
            else os.fdopen(descriptor, "w", encoding="utf-8", newline="")
        )
        with opened as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(name, _mode_for(path))  # mkstemp files are private (0600)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    with atomic_text_file(path) as stream:
        json.dump(data, stream, indent=2)
