"""Reaching Milvus: which deployment a ``milvus:`` location names, the pymilvus
client for it, and pymilvus's errors as :class:`IndexStoreError`.

``milvus:PATH.db`` is an embedded Milvus Lite file; ``milvus://HOST:PORT/COLLECTION``
is a Milvus server or cluster, with its token from ``PIXGUARD_MILVUS_TOKEN``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .._exceptions import IndexStoreError

__all__ = [
    "DEFAULT_COLLECTION",
    "MILVUS_PREFIX",
    "TOKEN_ENV",
    "MilvusConnection",
    "MilvusLocation",
    "parse_milvus_uri",
]

#: Locations that name a Milvus store rather than a folder.
MILVUS_PREFIX = "milvus:"
_SERVER_PREFIX = "milvus://"
DEFAULT_COLLECTION = "pixguard"
TOKEN_ENV = "PIXGUARD_MILVUS_TOKEN"


@dataclass(frozen=True)
class MilvusLocation:
    uri: str
    collection: str
    token: str | None
    display: str


def parse_milvus_uri(uri: str) -> MilvusLocation:
    """``milvus:PATH.db`` (Milvus Lite) or ``milvus://HOST:PORT/COLLECTION``."""
    if uri.startswith(_SERVER_PREFIX):
        rest = uri[len(_SERVER_PREFIX) :]
        address, _, collection = rest.partition("/")
        if not address or ":" not in address:
            raise IndexStoreError("expected milvus://HOST:PORT/COLLECTION", source=uri)
        return MilvusLocation(
            f"http://{address}",
            collection.strip("/") or DEFAULT_COLLECTION,
            os.environ.get(TOKEN_ENV) or None,
            uri,
        )
    if uri.startswith(MILVUS_PREFIX):
        path = uri[len(MILVUS_PREFIX) :]
        if not path.endswith(".db"):
            raise IndexStoreError("a Milvus Lite file name ends in .db", source=uri)
        return MilvusLocation(os.path.abspath(path), DEFAULT_COLLECTION, None, uri)
    raise IndexStoreError("not a Milvus URI", source=uri)


class MilvusConnection:
    """A pymilvus client for one location. Its calls go through :meth:`call`, so a
    Milvus failure reaches the caller as an :class:`IndexStoreError`."""

    def __init__(self, uri: str, *, create: bool) -> None:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        self._error = MilvusException
        self.where = parse_milvus_uri(uri)
        self.location = self.where.display
        if not create and self.where.uri.endswith(".db") and not os.path.exists(self.where.uri):
            raise IndexStoreError(
                "no index here (create one with `pixguard index add`)", source=uri
            )
        try:
            self.client = MilvusClient(uri=self.where.uri, token=self.where.token or "")
        except Exception as exc:  # pymilvus raises several kinds for unreachable servers
            raise IndexStoreError(f"cannot connect to Milvus: {exc}", source=uri) from exc

    def close(self) -> None:
        self.client.close()

    def call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except self._error as exc:
            raise IndexStoreError(f"Milvus {what} failed: {exc}", source=self.location) from exc

    def has(self, name: str) -> bool:
        return bool(self.call("has_collection", self.client.has_collection, name))
