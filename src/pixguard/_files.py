"""File helpers every layer shares: streamed hashing, atomic writes, the per-user data dir.

Every atomic write in pixguard goes through here: the data goes to a temporary
file (or folder) with a unique name beside the target, is fsynced, gets the usual
permissions (a new file ``0666 & ~umask``, a new folder ``0777 & ~umask``, or the
permissions of the file it replaces), and is then renamed into place, with the
parent folder fsynced so the rename itself survives a crash. A crash therefore
never leaves a half-written file behind, and two writers never share a temporary.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "MIB",
    "AtomicFile",
    "atomic_file",
    "atomic_folder",
    "atomic_text_file",
    "default_data_dir",
    "file_sha256",
    "write_json_atomic",
]

#: One mebibyte.
MIB = 1 << 20

_CHUNK = MIB


def file_sha256(*paths: str | os.PathLike[str]) -> str:
    """SHA-256 of the files' bytes, one after another, read in chunks."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _file_mode(path: Path) -> int:
    if path.is_file():
        return path.stat().st_mode & 0o777
    return 0o666 & ~_umask()


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class AtomicFile:
    """A unique temporary file beside ``path`` that becomes ``path`` on :meth:`commit`.

    For writers that need a path rather than a stream (numpy memory maps, FAISS,
    safetensors, Pillow). The temporary keeps ``path``'s suffix, for writers that
    choose a format by it. A ``private`` file is readable by its owner only (0600).
    """

    def __init__(self, path: str | os.PathLike[str], *, private: bool = False) -> None:
        self.path = Path(path)
        self.private = private
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=f".tmp{self.path.suffix}"
        )
        os.close(descriptor)
        self.temporary = Path(name)

    def commit(self) -> Path:
        _fsync(self.temporary)
        if not self.private:  # mkstemp files are private (0600)
            os.chmod(self.temporary, _file_mode(self.path))
        os.replace(self.temporary, self.path)
        _fsync(self.path.parent)
        return self.path

    def abort(self) -> None:
        self.temporary.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: str | os.PathLike[str], *, private: bool = False) -> Iterator[Path]:
    """A temporary path to write; it becomes ``path`` when the block ends without error
    (readable by its owner only when ``private``)."""
    pending = AtomicFile(path, private=private)
    try:
        yield pending.temporary
        pending.commit()
    except BaseException:
        pending.abort()
        raise


@contextmanager
def atomic_text_file(path: str | os.PathLike[str]) -> Iterator[IO[str]]:
    """A text stream that becomes ``path`` only when the block ends without error."""
    with atomic_file(path) as temporary, open(temporary, "w", encoding="utf-8", newline="") as out:
        yield out
        out.flush()


def write_json_atomic(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    with atomic_text_file(path) as stream:
        json.dump(data, stream, indent=2)


@contextmanager
def atomic_folder(target: str | os.PathLike[str], *, replace: bool = False) -> Iterator[Path]:
    """A scratch folder that becomes ``target`` when the block ends without error.

    With ``replace``, an existing ``target`` is swapped out only after the new
    folder is complete (the caller decides whether it may be replaced). Without
    it, a ``target`` that appeared meanwhile (a concurrent builder) is kept and the
    scratch folder discarded.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    old = None
    try:
        yield scratch
        for folder, _, files in os.walk(scratch):
            for name in files:
                _fsync(Path(folder) / name)
        os.chmod(scratch, 0o777 & ~_umask())  # mkdtemp folders are private (0700)
        if replace and target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
            target.rename(old / target.name)
            try:
                scratch.rename(target)
            except OSError:
                (old / target.name).rename(target)  # put the previous folder back
                raise
        else:
            try:
                scratch.rename(target)
            except OSError:
                if not target.is_dir():  # not a concurrent builder winning the race
                    raise
        _fsync(target.parent)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def default_data_dir() -> Path:
    """Where keys.db, audit.db and generated images live unless told otherwise:
    ``$XDG_DATA_HOME/pixguard``, else ``~/.local/share/pixguard`` (per user, never
    the working directory)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "pixguard"
