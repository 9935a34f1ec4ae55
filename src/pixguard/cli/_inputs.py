"""Expand command-line paths into the list of inputs to classify."""

from __future__ import annotations

from collections.abc import Iterable, Set
from pathlib import Path

from ..images import IMAGE_SUFFIXES

__all__ = ["expand_paths"]


def expand_paths(
    paths: Iterable[Path], *, recursive: bool, suffixes: Set[str] = IMAGE_SUFFIXES
) -> list[Path]:
    """Files named directly are kept as given (missing ones report their own error);
    folders contribute their files with ``suffixes`` (images by default), sorted,
    descending into sub-folders only with ``recursive``. Anything in a folder with
    one of those suffixes that is not a folder is kept, so a dangling link or a FIFO
    is reported, not skipped."""
    expanded: list[Path] = []
    for path in paths:
        if path.is_dir():
            candidates = path.rglob("*") if recursive else path.iterdir()
            expanded.extend(
                sorted(p for p in candidates if p.suffix.lower() in suffixes and not p.is_dir())
            )
        else:
            expanded.append(path)
    return expanded
