"""How an index is laid out in Milvus: the entries collection, with the model and
embedding size in its properties (so creating and recording are one step), the
small companion collection of aliases and settings, and the rows of each.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from .._exceptions import IndexStoreError
from ._store import Entry, NewEntry

__all__ = [
    "AUX_SUFFIX",
    "ENTRY_FIELDS",
    "alias_key",
    "aux_collection",
    "aux_row",
    "entries_collection",
    "entry_from_row",
    "entry_rows",
    "recorded_binding",
]

_SCHEMA_TAG = "pixguard-index-1"
_PROPERTY = "pixguard."
AUX_SUFFIX = "_aux"
#: Milvus needs a vector field in every collection; the companion's is a placeholder.
_AUX_DIM = 2
_MAX_SOURCE = 4096
_MAX_MODEL = 512
ENTRY_FIELDS = ["id", "sha256", "source", "label", "score", "model", "created", "tags"]


def entries_collection(model: str, dim: int) -> dict[str, Any]:
    """The ``create_collection`` arguments of the entries collection."""
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
    index = MilvusClient.prepare_index_params()
    index.add_index("vector", index_type="AUTOINDEX", metric_type="COSINE")
    return {
        "schema": schema,
        "index_params": index,
        "consistency_level": "Strong",
        "properties": {
            _PROPERTY + "schema": _SCHEMA_TAG,
            _PROPERTY + "model": model,
            _PROPERTY + "dim": str(dim),
        },
    }


def recorded_binding(properties: dict[str, Any], name: str, location: str) -> tuple[str, int]:
    """The model and embedding size in the entries collection's properties."""
    if properties.get(_PROPERTY + "schema") != _SCHEMA_TAG:
        raise IndexStoreError(f"collection {name!r} was not made by pixguard", source=location)
    return properties[_PROPERTY + "model"], int(properties[_PROPERTY + "dim"])


def aux_collection() -> dict[str, Any]:
    """The ``create_collection`` arguments of the companion collection."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=128)
    schema.add_field("kind", DataType.VARCHAR, max_length=16)
    schema.add_field("sha256", DataType.VARCHAR, max_length=64)
    schema.add_field("value", DataType.VARCHAR, max_length=_MAX_SOURCE)
    schema.add_field("placeholder", DataType.FLOAT_VECTOR, dim=_AUX_DIM)
    index = MilvusClient.prepare_index_params()
    index.add_index("placeholder", index_type="AUTOINDEX", metric_type="L2")
    return {"schema": schema, "index_params": index, "consistency_level": "Strong"}


def aux_row(key: str, kind: str, sha256: str, value: str) -> dict[str, Any]:
    return {
        "key": key,
        "kind": kind,
        "sha256": sha256,
        "value": value[:_MAX_SOURCE],
        "placeholder": [0.0] * _AUX_DIM,
    }


def alias_key(sha256: str, source: str) -> str:
    return "alias:" + hashlib.sha256(f"{sha256}\0{source}".encode()).hexdigest()[:40]


def entry_rows(entries: list[NewEntry], model: str) -> list[dict[str, Any]]:
    """Rows to insert, all stamped with the same creation time."""
    now = time.time()
    return [
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
        for entry in entries
    ]


def entry_from_row(row: dict[str, Any]) -> Entry:
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
