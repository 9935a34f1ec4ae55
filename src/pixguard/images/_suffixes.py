"""File-name suffixes of the image formats pixguard reads."""

__all__ = ["IMAGE_SUFFIXES"]

#: Files picked up when a folder is given. Files named explicitly are always tried.
IMAGE_SUFFIXES = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".apng",
        ".gif",
        ".webp",
        ".bmp",
        ".tif",
        ".tiff",
        ".avif",
        ".mpo",
    }
)
