"""Expand command-line paths into the list of inputs to classify."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..images import IMAGE_SUFFIXES

__all__ = ["expand_paths"]


def expand_paths(paths: Iterable[Path], *, recursive: bool) -> list[Path]:
    """Files named directly are kept as given (missing ones report their own error);
    folders contribute their image files, sorted, descending into sub-folders only
    with ``recursive``."""
    expanded: list[Path] = []
    for path in paths:
        if path.is_dir():
            candidates = path.rglob("*") if recursive else path.iterdir()
            expanded.extend(
                sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            )
        else:
            expanded.append(path)
    return expanded
