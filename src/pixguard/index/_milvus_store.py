"""The Milvus store: entries and vectors in one Milvus collection, through pymilvus.

The same client opens an embedded Milvus Lite file (``milvus:PATH.db``) or a Milvus
server or cluster (``milvus://HOST:PORT/COLLECTION``, token from
``PIXGUARD_MILVUS_TOKEN``). The model and embedding size are written into the
collection's properties by the call that creates it, so creating and recording are
one step: a second first add with another model finds the collection made and is
refused. Aliases and settings live in a small companion collection.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._exceptions import IndexStoreError
from ._store import Entry, NewEntry

__all__ = ["DEFAULT_COLLECTION", "TOKEN_ENV", "MilvusLocation", "MilvusStore", "parse_milvus_uri"]

DEFAULT_COLLECTION = "pixguard"
TOKEN_ENV = "PIXGUARD_MILVUS_TOKEN"
_SCHEMA_TAG = "pixguard-index-1"
_PROPERTY = "pixguard."
_AUX_SUFFIX = "_aux"
#: Milvus needs a vector field in every collection; the companion's is a placeholder.
_AUX_DIM = 2
_MAX_SOURCE = 4096
_MAX_MODEL = 512
_QUERY_CHUNK = 500
_ITERATOR_BATCH = 1000
_FIELDS = ["id", "sha256", "source", "label", "score", "model", "created", "tags"]


@dataclass(frozen=True)
class MilvusLocation:
    uri: str
    collection: str
    token: str | None
    display: str


def parse_milvus_uri(uri: str) -> MilvusLocation:
    """``milvus:PATH.db`` (Milvus Lite) or ``milvus://HOST:PORT/COLLECTION``."""
    if uri.startswith("milvus://"):
        rest = uri[len("milvus://") :]
        address, _, collection = rest.partition("/")
        if not address or ":" not in address:
            raise IndexStoreError("expected milvus://HOST:PORT/COLLECTION", source=uri)
        return MilvusLocation(
            f"http://{address}",
            collection.strip("/") or DEFAULT_COLLECTION,
            os.environ.get(TOKEN_ENV) or None,
            uri,
        )
    if uri.startswith("milvus:"):
        path = uri[len("milvus:") :]
        if not path.endswith(".db"):
            raise IndexStoreError("a Milvus Lite file name ends in .db", source=uri)
        return MilvusLocation(os.path.abspath(path), DEFAULT_COLLECTION, None, uri)
    raise IndexStoreError("not a Milvus URI", source=uri)


def _quote(value: str) -> str:
    return json.dumps(value)  # a double-quoted string with escapes, as Milvus filters take


class MilvusStore:
    """One Milvus collection per index. Ids are Milvus's own (auto ids)."""

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
            self._client = MilvusClient(uri=self.where.uri, token=self.where.token or "")
        except Exception as exc:  # pymilvus raises several kinds for unreachable servers
            raise IndexStoreError(f"cannot connect to Milvus: {exc}", source=uri) from exc
        self.name = self.where.collection
        self._aux = self.name + _AUX_SUFFIX
        if not create and not self._has(self.name):
            raise IndexStoreError(
                "no index here (create one with `pixguard index add`)", source=uri
            )
        self._bound: tuple[str, int] | None = None
        # A restarted server keeps collections released until asked to load them.
        for name in (self.name, self._aux):
            if self._has(name):
                self._call("load_collection", self._client.load_collection, name)

    def close(self) -> None:
        self._client.close()

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except self._error as exc:
            raise IndexStoreError(f"Milvus {what} failed: {exc}", source=self.location) from exc

    def _has(self, name: str) -> bool:
        return bool(self._call("has_collection", self._client.has_collection, name))

    # -- what the index holds ----------------------------------------------------------

    def bound(self) -> tuple[str, int] | None:
        if self._bound is None and self._has(self.name):
            info = self._call("describe", self._client.describe_collection, self.name)
            recorded = info.get("properties") or {}
            if recorded.get(_PROPERTY + "schema") != _SCHEMA_TAG:
                raise IndexStoreError(
                    f"collection {self.name!r} was not made by pixguard", source=self.location
                )
            self._bound = (recorded[_PROPERTY + "model"], int(recorded[_PROPERTY + "dim"]))
        return self._bound

    def bind(self, model: str, dim: int) -> tuple[str, int]:
        """Create the collection with ``model`` and ``dim`` in its description, unless
        it exists; return what it records (whoever created it first)."""
        if self.bound() is None:
            try:
                self._create(model, dim)
            except IndexStoreError:
                if not self._has(self.name):
                    raise  # a real failure, not a lost race
        bound = self.bound()
        assert bound is not None
        return bound

    def _create(self, model: str, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=True)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("sha256", DataType.VARCHAR, max_length=64)
        schema.add_field("source", DataType.VARCHAR, max_length=_MAX_SOURCE, nullable=True)
        schema.add_field("label", DataType.VARCHAR, max_length=64, nullable=True)
        schema.add_field("score", DataType.DOUBLE, nullable=True)
        schema.add_field("model", DataType.VARCHAR, max_length=_MAX_MODEL)
        schema.add_field("created", DataType.DOUBLE)
        schema.add_field("tags", DataType.JSON)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = self._client.prepare_index_params()
        index.add_index("vector", index_type="AUTOINDEX", metric_type="COSINE")
        self._call(
            "create_collection",
            self._client.create_collection,
            self.name,
            schema=schema,
            index_params=index,
            consistency_level="Strong",
            properties={
                _PROPERTY + "schema": _SCHEMA_TAG,
                _PROPERTY + "model": model,
                _PROPERTY + "dim": str(dim),
            },
        )

    def _ensure_aux(self) -> None:
        if self._has(self._aux):
            return
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field("kind", DataType.VARCHAR, max_length=16)
        schema.add_field("sha256", DataType.VARCHAR, max_length=64)
        schema.add_field("value", DataType.VARCHAR, max_length=_MAX_SOURCE)
        schema.add_field("placeholder", DataType.FLOAT_VECTOR, dim=_AUX_DIM)
        index = self._client.prepare_index_params()
        index.add_index("placeholder", index_type="AUTOINDEX", metric_type="L2")
        try:
            self._call(
                "create_collection",
                self._client.create_collection,
                self._aux,
                schema=schema,
                index_params=index,
                consistency_level="Strong",
            )
        except IndexStoreError:
            if not self._has(self._aux):
                raise

    def _put_aux(self, key: str, kind: str, sha256: str, value: str) -> None:
        self._ensure_aux()
        row = {
            "key": key,
            "kind": kind,
            "sha256": sha256,
            "value": value[:_MAX_SOURCE],
            "placeholder": [0.0] * _AUX_DIM,
        }
        self._call("upsert", self._client.upsert, self._aux, [row])
        self._call("flush", self._client.flush, self._aux)

    def _aux_rows(self, kind: str) -> list[dict[str, Any]]:
        if not self._has(self._aux):
            return []
        return list(
            self._call(
                "query",
                self._client.query,
                self._aux,
                filter=f"kind == {_quote(kind)}",
                output_fields=["key", "sha256", "value"],
            )
        )

    def get_setting(self, key: str) -> str | None:
        for row in self._aux_rows("setting"):
            if row["key"] == f"setting:{key}":
                return str(row["value"])
        return None

    def set_setting(self, key: str, value: str) -> None:
        self._put_aux(f"setting:{key}", "setting", "", value)

    # -- entries -----------------------------------------------------------------------

    def add(self, entries: list[NewEntry], model: str) -> list[int]:
        """Insert and flush (the acknowledgement). Bytes already present are not
        inserted again; their other names become aliases."""
        if not entries:
            return []
        known = self.existing_hashes(entry.sha256 for entry in entries)
        fresh: dict[str, NewEntry] = {}
        for entry in entries:
            if entry.sha256 in known or entry.sha256 in fresh:
                if entry.source:
                    self.add_alias(entry.sha256, entry.source)
            else:
                fresh[entry.sha256] = entry
        if not fresh:
            return []
        now = time.time()
        rows = [
            {
                "sha256": entry.sha256,
                "source": None if entry.source is None else entry.source[:_MAX_SOURCE],
                "label": entry.label,
                "score": entry.score,
                "model": model,
                "created": now,
                "tags": list(entry.tags),
                "vector": np.asarray(entry.vector, dtype=np.float32).tolist(),
            }
            for entry in fresh.values()
        ]
        result = self._call("insert", self._client.insert, self.name, rows)
        self._call("flush", self._client.flush, self.name)
        return [int(i) for i in result["ids"]]

    def _query_in(self, field: str, values: list[Any], output: list[str]) -> list[dict[str, Any]]:
        if not values or not self._has(self.name):
            return []
        rows: list[dict[str, Any]] = []
        for start in range(0, len(values), _QUERY_CHUNK):
            chunk = values[start : start + _QUERY_CHUNK]
            listed = ", ".join(_quote(v) if isinstance(v, str) else str(int(v)) for v in chunk)
            rows.extend(
                self._call(
                    "query",
                    self._client.query,
                    self.name,
                    filter=f"{field} in [{listed}]",
                    output_fields=output,
                )
            )
        return rows

    def existing_hashes(self, hashes: Iterable[str]) -> set[str]:
        return {row["sha256"] for row in self._query_in("sha256", list(hashes), ["sha256"])}

    def add_alias(self, sha256: str, source: str) -> None:
        owner = self.by_sha([sha256]).get(sha256)
        if owner is not None and owner.source == source:
            return  # the entry's own name is not an alias of itself
        key = "alias:" + hashlib.sha256(f"{sha256}\0{source}".encode()).hexdigest()[:40]
        self._put_aux(key, "alias", sha256, source)

    def aliases(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for row in sorted(self._aux_rows("alias"), key=lambda r: (r["sha256"], r["value"])):
            groups.setdefault(row["sha256"], []).append(row["value"])
        return groups

    @staticmethod
    def _entry(row: dict[str, Any]) -> Entry:
        return Entry(
            id=int(row["id"]),
            sha256=row["sha256"],
            source=row.get("source"),
            label=row.get("label"),
            score=row.get("score"),
            model=row["model"],
            created=float(row["created"]),
            tags=tuple(row.get("tags") or ()),
        )

    def by_sha(self, hashes: Iterable[str]) -> dict[str, Entry]:
        return {
            row["sha256"]: self._entry(row)
            for row in self._query_in("sha256", list(hashes), _FIELDS)
        }

    def entries(self, ids: Iterable[int]) -> dict[int, Entry]:
        wanted = [int(i) for i in ids]
        if not wanted or not self._has(self.name):
            return {}
        rows = []
        for start in range(0, len(wanted), _QUERY_CHUNK):
            # get: a primary-key lookup, cheaper than a filter expression
            rows += self._call(
                "get",
                self._client.get,
                self.name,
                ids=wanted[start : start + _QUERY_CHUNK],
                output_fields=_FIELDS,
            )
        return {int(row["id"]): self._entry(row) for row in rows}

    def vector(self, entry_id: int) -> np.ndarray | None:
        rows = self._query_in("id", [int(entry_id)], ["id", "vector"])
        return np.asarray(rows[0]["vector"], dtype=np.float32) if rows else None

    def iter_vectors(
        self, *, label: str | None = None, batch: int = _ITERATOR_BATCH
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if not self._has(self.name):
            return
        iterator = self._call(
            "query_iterator",
            self._client.query_iterator,
            self.name,
            batch_size=batch,
            filter="" if label is None else f"label == {_quote(label)}",
            output_fields=["id", "vector"],
        )
        try:
            while rows := iterator.next():
                ids = np.fromiter((int(r["id"]) for r in rows), dtype=np.int64, count=len(rows))
                vectors = np.asarray([r["vector"] for r in rows], dtype=np.float32)
                yield ids, vectors
        finally:
            iterator.close()

    def remove(self, ids: list[int]) -> int:
        present = list(self.entries(ids))
        if present:
            self._call("delete", self._client.delete, self.name, ids=present)
            self._call("flush", self._client.flush, self.name)
        return len(present)

    def count(self, label: str | None = None) -> int:
        if not self._has(self.name):
            return 0
        rows = self._call(
            "count",
            self._client.query,
            self.name,
            filter="" if label is None else f"label == {_quote(label)}",
            output_fields=["count(*)"],
        )
        return int(rows[0]["count(*)"])

    def label_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        if not self._has(self.name):
            return counts
        iterator = self._call(
            "query_iterator",
            self._client.query_iterator,
            self.name,
            batch_size=_ITERATOR_BATCH,
            filter="",
            output_fields=["label"],
        )
        try:
            while rows := iterator.next():
                for row in rows:
                    label = row.get("label") or ""
                    counts[label] = counts.get(label, 0) + 1
        finally:
            iterator.close()
        return counts

    def describe(self) -> dict[str, Any]:
        return {"store": "milvus", "uri": self.location, "collection": self.name}

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        if self.bound() is None:
            return [[] for _ in range(len(queries))]
        results = self._call(
            "search",
            self._client.search,
            self.name,
            data=np.asarray(queries, dtype=np.float32).tolist(),
            limit=k,
            search_params={"metric_type": "COSINE"},
            output_fields=[],
        )
        return [[(int(hit["id"]), float(hit["distance"])) for hit in hits] for hits in results]

    def rebuild(self, kind: str | None = None) -> None:
        raise IndexStoreError(
            "rebuild applies to FAISS folders; Milvus maintains its own index",
            source=self.location,
        )
