"""Read an untrusted input's bytes (a path, bytes or a binary stream) within the
byte limit, with typed errors."""

from __future__ import annotations

import os
import stat as stat_module
from collections.abc import Callable
from pathlib import Path

from .._exceptions import (
    EmptyImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    ImageUnreadableError,
    InvalidImageInputError,
)
from ._limits import DecodeLimits

__all__ = ["read_bytes"]


def read_bytes(source: object, name: str, limits: DecodeLimits) -> bytes:
    if isinstance(source, str | os.PathLike):
        return _read_path(Path(os.fspath(source)), name, limits)
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        _check_byte_count(len(data), name, limits)
        return data
    read = getattr(source, "read", None)
    if callable(read):
        data = _read_stream(read, name, limits)
        _check_byte_count(len(data), name, limits)
        return data
    raise InvalidImageInputError(
        f"unsupported input type {type(source).__name__}; expected a path, bytes, a binary "
        "file object, a PIL image or a numpy array",
        source=name,
    )


def _read_stream(read: Callable[[int], object], name: str, limits: DecodeLimits) -> bytes:
    """Read to EOF or one byte past the limit; unbuffered streams return short reads."""
    chunks: list[bytes] = []
    total = 0
    while total <= limits.max_bytes:
        try:
            chunk = read(limits.max_bytes + 1 - total)
        except OSError as exc:
            raise ImageUnreadableError(f"cannot read the stream ({exc})", source=name) from exc
        if chunk is None:  # a non-blocking stream with nothing ready yet
            raise ImageUnreadableError("the stream is non-blocking and had no data", source=name)
        if not isinstance(chunk, bytes | bytearray):
            raise InvalidImageInputError(
                "the file object must be opened in binary mode", source=name
            )
        if not chunk:
            break
        chunks.append(bytes(chunk))
        total += len(chunk)
    return b"".join(chunks)


def _read_path(path: Path, name: str, limits: DecodeLimits) -> bytes:
    if "\0" in str(path):
        raise InvalidImageInputError("the path contains a NUL byte", source=name)
    try:
        stat = path.stat()
    except FileNotFoundError as exc:
        if path.is_symlink():
            raise ImageNotFoundError(
                "is a dangling symbolic link (its target does not exist)", source=name
            ) from exc
        raise ImageNotFoundError("no such file", source=name) from exc
    except OSError as exc:
        raise ImageUnreadableError(f"cannot access the file ({exc.strerror})", source=name) from exc
    if path.is_dir():
        raise ImageUnreadableError("is a directory, not an image file", source=name)
    if not stat_module.S_ISREG(stat.st_mode):
        # A FIFO or a device would block or never end.
        raise ImageUnreadableError("is not a regular file (a FIFO, socket or device)", source=name)
    # Files such as /proc's report size 0 and still hold data: only the upper
    # bound is checked before reading, emptiness after.
    if stat.st_size > limits.max_bytes:
        _check_byte_count(stat.st_size, name, limits)
    try:
        with path.open("rb") as handle:
            data = _read_stream(handle.read, name, limits)
    except OSError as exc:
        raise ImageUnreadableError(f"cannot read the file ({exc.strerror})", source=name) from exc
    _check_byte_count(len(data), name, limits)
    return data


def _check_byte_count(count: int, name: str, limits: DecodeLimits) -> None:
    if count == 0:
        raise EmptyImageError("the input is empty (0 bytes)", source=name)
    if count > limits.max_bytes:
        raise ImageTooLargeError(
            f"the input is larger than the {limits.max_bytes:,}-byte limit", source=name
        )
