"""What a scan reads: listing sources (folders, globs, path lists, ``s3://``) and
reading one input's bytes (or hashing a local video's) within the byte limit.

Local files and object stores go through pyarrow's filesystems, so one code path
reads both, on the driver and inside Ray workers alike (the filesystem options are
plain picklable data).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .._exceptions import (
    ImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    ImageUnreadableError,
    ScanError,
)
from .._files import file_sha256
from ..images import IMAGE_SUFFIXES, VIDEO_SUFFIXES

__all__ = [
    "SCAN_SUFFIXES",
    "ObjectStoreOptions",
    "ScanInput",
    "hash_local_file",
    "is_local",
    "list_inputs",
    "listing_table",
    "read_input",
]

S3_SCHEME = "s3://"
#: Files whose lines (or ``path`` column) name the inputs, instead of being inputs.
LIST_SUFFIXES = frozenset({".txt", ".lst"})
PARQUET_SUFFIXES = frozenset({".parquet"})
_GLOB_CHARACTERS = frozenset("*?[")
#: Files that folders and ``s3://`` prefixes contribute: images and videos.
SCAN_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES


@dataclass(frozen=True)
class ObjectStoreOptions:
    """How to reach ``s3://`` sources. Unset fields come from the usual AWS variables
    (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
    ``AWS_REGION``) and ``AWS_ENDPOINT_URL`` for S3-compatible stores."""

    endpoint: str | None = None
    region: str | None = None
    anonymous: bool = False

    def filesystem(self) -> pafs.S3FileSystem:
        endpoint = (
            self.endpoint
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        options: dict[str, object] = {"anonymous": self.anonymous}
        if endpoint:
            parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
            options["endpoint_override"] = parsed.netloc
            options["scheme"] = parsed.scheme
        region = self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            options["region"] = region
        return pafs.S3FileSystem(**options)


@dataclass(frozen=True)
class ScanInput:
    """One input of a scan: its path (absolute local path or ``s3://bucket/key``) and
    its size when the listing knew it."""

    path: str
    size: int | None = None


def listing_table(inputs: Sequence[ScanInput]) -> pa.Table:
    """Inputs as the table the batch function takes: ``path`` and ``size``."""
    return pa.table(
        {
            "path": pa.array([item.path for item in inputs], pa.string()),
            "size": pa.array([item.size for item in inputs], pa.int64()),
        }
    )


def _is_s3(path: str) -> bool:
    return path.startswith(S3_SCHEME)


def is_local(path: str) -> bool:
    """Whether ``path`` is on this machine's filesystem (not in an object store)."""
    return not _is_s3(path)


def resolve(path: str, store: ObjectStoreOptions) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding ``path`` and the path inside it."""
    if _is_s3(path):
        return store.filesystem(), path[len(S3_SCHEME) :]
    return pafs.LocalFileSystem(), path


def _is_media_name(name: str) -> bool:
    return Path(name).suffix.lower() in SCAN_SUFFIXES


def _list_s3(uri: str, store: ObjectStoreOptions) -> list[ScanInput]:
    filesystem, path = resolve(uri, store)
    try:
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.File:
            return [ScanInput(uri, info.size)]
        infos = filesystem.get_file_info(pafs.FileSelector(path.rstrip("/"), recursive=True))
    except (OSError, pa.ArrowException) as exc:
        raise ScanError(f"cannot list the object store: {exc}", source=uri) from exc
    return sorted(
        (
            ScanInput(S3_SCHEME + item.path, item.size)
            for item in infos
            if item.type == pafs.FileType.File and _is_media_name(item.path)
        ),
        key=lambda item: item.path,
    )


def _list_folder(folder: Path) -> list[ScanInput]:
    found = []
    for path in sorted(folder.rglob("*")):
        if _is_media_name(path.name) and path.is_file():
            found.append(ScanInput(str(path.resolve()), path.stat().st_size))
    return found


def _read_path_list(source: Path) -> list[str]:
    try:
        if source.suffix.lower() in PARQUET_SUFFIXES:
            table = pq.read_table(source, columns=["path"])
            return [str(p) for p in table.column("path").to_pylist() if p]
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError, pa.ArrowException, KeyError) as exc:
        raise ScanError(
            f"cannot read the list of paths (text: one path a line; Parquet: a `path` column): {exc}",
            source=str(source),
        ) from exc
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _local_input(path: str) -> ScanInput:
    """A file named explicitly: always tried (a missing one becomes its error row)."""
    local = Path(path).absolute()
    return ScanInput(str(local), local.stat().st_size if local.is_file() else None)


def list_inputs(sources: list[str], store: ObjectStoreOptions | None = None) -> list[ScanInput]:
    """Expand ``sources`` into the scan's inputs, each once, in a stable order.

    Folders (recursively) and ``s3://bucket/prefix`` contribute their image and
    video files;
    globs their matches; ``.txt``/``.lst`` files one path a line and ``.parquet``
    files a ``path`` column (each path local or ``s3://``); other files themselves.
    """
    store = store or ObjectStoreOptions()
    found: list[ScanInput] = []
    for source in sources:
        if _is_s3(source):
            found.extend(_list_s3(source, store))
        elif _GLOB_CHARACTERS & set(source):
            for match in sorted(glob.glob(source, recursive=True)):
                if Path(match).is_file():
                    found.append(_local_input(match))
        elif Path(source).is_dir():
            found.extend(_list_folder(Path(source)))
        elif Path(source).suffix.lower() in LIST_SUFFIXES | PARQUET_SUFFIXES:
            for path in _read_path_list(Path(source)):
                found.extend(_list_s3(path, store) if _is_s3(path) else [_local_input(path)])
        elif Path(source).exists():
            found.append(_local_input(source))
        else:
            raise ScanError("no such file, folder, glob match or list", source=source)
    unique = list({item.path: item for item in found}.values())
    return unique


def read_input(
    path: str,
    store: ObjectStoreOptions,
    max_bytes: int,
    too_large: type[ImageError] = ImageTooLargeError,
) -> bytes:
    """The bytes of one input, reading at most one byte past ``max_bytes``; an
    input over it raises ``too_large`` (a video's limit has its own error)."""
    filesystem, inner = resolve(path, store)
    try:
        info = filesystem.get_file_info(inner)
        if info.type == pafs.FileType.NotFound:
            raise ImageNotFoundError("no such file", source=path)
        if info.type != pafs.FileType.File:
            raise ImageUnreadableError("not a file", source=path)
        if info.size is not None and info.size > max_bytes:
            raise too_large(f"the input is larger than the {max_bytes:,}-byte limit", source=path)
        with filesystem.open_input_stream(inner) as stream:
            data = stream.read(max_bytes + 1)
    except (OSError, pa.ArrowException) as exc:
        raise ImageUnreadableError(f"cannot read the input ({exc})", source=path) from exc
    if len(data) > max_bytes:
        raise too_large(f"the input is larger than the {max_bytes:,}-byte limit", source=path)
    return data


def hash_local_file(path: str, max_bytes: int, too_large: type[ImageError]) -> tuple[int, str]:
    """The size and SHA-256 of a local file, read in chunks (a video is decoded
    from its file, never held whole in memory); over ``max_bytes`` it raises
    ``too_large`` without reading."""
    local = Path(path)
    try:
        if not local.exists():
            raise ImageNotFoundError("no such file", source=path)
        if not local.is_file():
            raise ImageUnreadableError("not a file", source=path)
        size = local.stat().st_size
        if size > max_bytes:
            raise too_large(f"the input is larger than the {max_bytes:,}-byte limit", source=path)
        digest = file_sha256(local)
    except OSError as exc:
        raise ImageUnreadableError(f"cannot read the input ({exc})", source=path) from exc
    return size, digest
