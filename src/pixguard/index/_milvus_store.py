"""The Milvus store: entries and vectors in one Milvus collection, through pymilvus.

The same client opens an embedded Milvus Lite file or a Milvus server or cluster
(:mod:`._milvus_connection`). A second first add with another model finds the
collection made and is refused, since creating it records the model
(:mod:`._milvus_layout`). Aliases and settings live in a small companion collection.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .._exceptions import IndexStoreError
from ._milvus_connection import MilvusConnection
from ._milvus_layout import (
    AUX_SUFFIX,
    ENTRY_FIELDS,
    alias_key,
    aux_collection,
    aux_row,
    entries_collection,
    entry_from_row,
    entry_rows,
    recorded_binding,
)
from ._store import Entry, NewEntry

__all__ = ["MilvusStore"]

_QUERY_CHUNK = 500
_ITERATOR_BATCH = 1000


def _quote(value: str) -> str:
    return json.dumps(value)  # a double-quoted string with escapes, as Milvus filters take


class MilvusStore:
    """One Milvus collection per index. Ids are Milvus's own (auto ids)."""

    def __init__(self, uri: str, *, create: bool) -> None:
        self._milvus = MilvusConnection(uri, create=create)
        self._client = self._milvus.client
        self.location = self._milvus.location
        self.name = self._milvus.where.collection
        self._aux = self.name + AUX_SUFFIX
        if not create and not self._milvus.has(self.name):
            raise IndexStoreError(
                "no index here (create one with `pixguard index add`)", source=uri
            )
        self._bound: tuple[str, int] | None = None
        # A restarted server keeps collections released until asked to load them.
        for name in (self.name, self._aux):
            if self._milvus.has(name):
                self._milvus.call("load_collection", self._client.load_collection, name)

    def close(self) -> None:
        self._milvus.close()

    # -- what the index holds ----------------------------------------------------------

    def bound(self) -> tuple[str, int] | None:
        if self._bound is None and self._milvus.has(self.name):
            info = self._milvus.call("describe", self._client.describe_collection, self.name)
            self._bound = recorded_binding(info.get("properties") or {}, self.name, self.location)
        return self._bound

    def bind(self, model: str, dim: int) -> tuple[str, int]:
        """Create the collection with ``model`` and ``dim`` in its description, unless
        it exists; return what it records (whoever created it first)."""
        if self.bound() is None:
            try:
                self._milvus.call(
                    "create_collection",
                    self._client.create_collection,
                    self.name,
                    **entries_collection(model, dim),
                )
            except IndexStoreError:
                if not self._milvus.has(self.name):
                    raise  # a real failure, not a lost race
        bound = self.bound()
        assert bound is not None
        return bound

    def _ensure_aux(self) -> None:
        if self._milvus.has(self._aux):
            return
        try:
            self._milvus.call(
                "create_collection",
                self._client.create_collection,
                self._aux,
                **aux_collection(),
            )
        except IndexStoreError:
            if not self._milvus.has(self._aux):
                raise

    def _put_aux(self, key: str, kind: str, sha256: str, value: str) -> None:
        self._ensure_aux()
        self._milvus.call(
            "upsert", self._client.upsert, self._aux, [aux_row(key, kind, sha256, value)]
        )
        self._milvus.call("flush", self._client.flush, self._aux)

    def _aux_rows(self, kind: str) -> list[dict[str, Any]]:
        if not self._milvus.has(self._aux):
            return []
        return list(
            self._milvus.call(
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
        rows = entry_rows(list(fresh.values()), model)
        result = self._milvus.call("insert", self._client.insert, self.name, rows)
        self._milvus.call("flush", self._client.flush, self.name)
        return [int(i) for i in result["ids"]]

    def _query_in(self, field: str, values: list[Any], output: list[str]) -> list[dict[str, Any]]:
        if not values or not self._milvus.has(self.name):
            return []
        rows: list[dict[str, Any]] = []
        for start in range(0, len(values), _QUERY_CHUNK):
            chunk = values[start : start + _QUERY_CHUNK]
            listed = ", ".join(_quote(v) if isinstance(v, str) else str(int(v)) for v in chunk)
            rows.extend(
                self._milvus.call(
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
        self._put_aux(alias_key(sha256, source), "alias", sha256, source)

    def aliases(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for row in sorted(self._aux_rows("alias"), key=lambda r: (r["sha256"], r["value"])):
            groups.setdefault(row["sha256"], []).append(row["value"])
        return groups

    def by_sha(self, hashes: Iterable[str]) -> dict[str, Entry]:
        return {
            row["sha256"]: entry_from_row(row)
            for row in self._query_in("sha256", list(hashes), ENTRY_FIELDS)
        }

    def entries(self, ids: Iterable[int]) -> dict[int, Entry]:
        wanted = [int(i) for i in ids]
        if not wanted or not self._milvus.has(self.name):
            return {}
        rows = []
        for start in range(0, len(wanted), _QUERY_CHUNK):
            # get: a primary-key lookup, cheaper than a filter expression
            rows += self._milvus.call(
                "get",
                self._client.get,
                self.name,
                ids=wanted[start : start + _QUERY_CHUNK],
                output_fields=ENTRY_FIELDS,
            )
        return {int(row["id"]): entry_from_row(row) for row in rows}

    def vector(self, entry_id: int) -> np.ndarray | None:
        rows = self._query_in("id", [int(entry_id)], ["id", "vector"])
        return np.asarray(rows[0]["vector"], dtype=np.float32) if rows else None

    def iter_vectors(
        self, *, label: str | None = None, batch: int = _ITERATOR_BATCH
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if not self._milvus.has(self.name):
            return
        iterator = self._milvus.call(
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
            self._milvus.call("delete", self._client.delete, self.name, ids=present)
            self._milvus.call("flush", self._client.flush, self.name)
        return len(present)

    def count(self, label: str | None = None) -> int:
        if not self._milvus.has(self.name):
            return 0
        rows = self._milvus.call(
            "count",
            self._client.query,
            self.name,
            filter="" if label is None else f"label == {_quote(label)}",
            output_fields=["count(*)"],
        )
        return int(rows[0]["count(*)"])

    def label_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        if not self._milvus.has(self.name):
            return counts
        iterator = self._milvus.call(
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
        results = self._milvus.call(
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
