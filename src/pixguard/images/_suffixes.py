"""File name suffixes of the supported formats: what a folder contributes as images."""

from __future__ import annotations

__all__ = ["IMAGE_SUFFIXES"]

#: Files picked up from folders (classify, index, datasets). A file named explicitly
#: is always tried, whatever its name: its bytes decide its format.
IMAGE_SUFFIXES = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".mpo",
        ".png",
        ".apng",
        ".gif",
        ".webp",
        ".bmp",
        ".tif",
        ".tiff",
        ".avif",
    }
)
