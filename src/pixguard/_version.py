"""The installed version, read from the package metadata."""

from importlib import metadata

__all__ = ["__version__"]

try:
    __version__ = metadata.version("pixguard")
except metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"
