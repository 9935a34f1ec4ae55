"""Entry metadata and vectors in SQLite (WAL): the index's durable source of truth.

An add is acknowledged when its transaction commits. FAISS structures are derived
from these rows and can always be rebuilt, so a crash at any moment loses nothing
that was acknowledged.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import IndexStoreError
from .._sqlite import connect, transaction

__all__ = ["Entry", "MetadataStore", "NewEntry"]

_IN_CHUNK = 500
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256 TEXT NOT NULL UNIQUE,
    source TEXT,
    label TEXT,
    score REAL,
    model TEXT NOT NULL,
    created REAL NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_label ON entries(label);
CREATE TABLE IF NOT EXISTS aliases (
    sha256 TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (sha256, source)
);
"""


@dataclass(frozen=True)
class NewEntry:
    sha256: str
    source: str | None
    label: str | None
    score: float | None
    vector: np.ndarray
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entry:
    id: int
    sha256: str
    source: str | None
    label: str | None
    score: float | None
    model: str
    created: float
    tags: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sha256": self.sha256,
            "source": self.source,
            "label": self.label,
            "score": self.score,
            "model": self.model,
            "created": self.created,
            "tags": list(self.tags),
        }


def _entry(row: sqlite3.Row) -> Entry:
    return Entry(
        id=row["id"],
        sha256=row["sha256"],
        source=row["source"],
        label=row["label"],
        score=row["score"],
        model=row["model"],
        created=row["created"],
        tags=tuple(json.loads(row["tags"])),
    )


class MetadataStore:
    def __init__(self, path: Path) -> None:
        try:
            self._db = connect(path)
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('uuid', ?)",
                (uuid.uuid4().hex[:16],),
            )
        except sqlite3.DatabaseError as exc:
            raise IndexStoreError(
                f"cannot open the index database: {exc}", source=str(path)
            ) from exc
        self.path = path

    def close(self) -> None:
        self._db.close()

    def _rows_in(self, columns: str, key: str, values: list[Any]) -> Iterator[sqlite3.Row]:
        """Rows of ``entries`` whose ``key`` is in ``values``, queried in chunks that
        stay under SQLite's limit on bound parameters."""
        for start in range(0, len(values), _IN_CHUNK):
            chunk = values[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            yield from self._db.execute(
                f"SELECT {columns} FROM entries WHERE {key} IN ({marks})", chunk
            )

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row["value"]

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def bind_model(self, model: str, dim: int) -> tuple[str, int]:
        """Record ``model`` and ``dim`` unless the index already has them, and return
        what it holds. Check and record are one transaction, so two first adds with
        different models cannot both pass."""
        with transaction(self._db):
            for key, value in (("model", model), ("dim", str(dim))):
                self._db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value)
                )
            rows = dict(
                self._db.execute("SELECT key, value FROM meta WHERE key IN ('model', 'dim')")
            )
        return rows["model"], int(rows["dim"])

    def live_ids(self, ids: list[int]) -> set[int]:
        """Those of ``ids`` that still exist."""
        return {row["id"] for row in self._rows_in("id", "id", ids)}

    def existing_hashes(self, hashes: Iterable[str]) -> set[str]:
        return {row["sha256"] for row in self._rows_in("sha256", "sha256", list(hashes))}

    def add(self, entries: list[NewEntry], model: str) -> list[int]:
        """Insert in one transaction; returns the new ids. Known hashes are skipped
        (their source is kept as an alias)."""
        ids: list[int] = []
        now = time.time()
        with transaction(self._db):
            for entry in entries:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO entries (sha256, source, label, score, model, created, tags, vector)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        entry.sha256,
                        entry.source,
                        entry.label,
                        entry.score,
                        model,
                        now,
                        json.dumps(list(entry.tags)),
                        np.ascontiguousarray(entry.vector, dtype=np.float32).tobytes(),
                    ),
                )
                if cursor.rowcount and cursor.lastrowid is not None:
                    ids.append(cursor.lastrowid)
                elif entry.source:
                    self.add_alias(entry.sha256, entry.source)
        return ids

    def add_alias(self, sha256: str, source: str) -> None:
        """Record another name for known bytes (not the entry's own name)."""
        self._db.execute(
            "INSERT OR IGNORE INTO aliases (sha256, source) SELECT ?, ? WHERE NOT EXISTS "
            "(SELECT 1 FROM entries WHERE sha256 = ? AND source = ?)",
            (sha256, source, sha256, source),
        )

    @property
    def uuid(self) -> str:
        return self.get_meta("uuid") or ""

    def last_id_issued(self) -> int:
        """The highest id ever issued (removals do not lower it)."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'entries'").fetchone()
        return 0 if row is None else int(row[0])

    def vectors(self, ids: Sequence[int], dim: int) -> dict[int, np.ndarray]:
        return {
            row["id"]: np.frombuffer(row["vector"], dtype=np.float32, count=dim)
            for row in self._rows_in("id, vector", "id", list(ids))
        }

    def remove(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        with transaction(self._db):
            removed = 0
            for entry_id in ids:
                row = self._db.execute(
                    "SELECT sha256 FROM entries WHERE id = ?", (entry_id,)
                ).fetchone()
                if row is None:
                    continue
                self._db.execute("DELETE FROM aliases WHERE sha256 = ?", (row["sha256"],))
                removed += self._db.execute(
                    "DELETE FROM entries WHERE id = ?", (entry_id,)
                ).rowcount
        return removed

    def entries(self, ids: Iterable[int]) -> dict[int, Entry]:
        return {row["id"]: _entry(row) for row in self._rows_in("*", "id", list(ids))}

    def vector(self, entry_id: int, dim: int) -> np.ndarray | None:
        row = self._db.execute("SELECT vector FROM entries WHERE id = ?", (entry_id,)).fetchone()
        return (
            None
            if row is None
            else np.frombuffer(row["vector"], dtype=np.float32, count=dim).copy()
        )

    def iter_vectors(
        self, dim: int, *, after_id: int = 0, label: str | None = None, batch: int = 10_000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) in id order, in batches, so memory stays bounded."""
        last = after_id
        while True:
            query = "SELECT id, vector FROM entries WHERE id > ?"
            params: list[Any] = [last]
            if label is not None:
                query += " AND label = ?"
                params.append(label)
            rows = self._db.execute(query + " ORDER BY id LIMIT ?", (*params, batch)).fetchall()
            if not rows:
                return
            ids = np.fromiter((row["id"] for row in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(row["vector"] for row in rows), dtype=np.float32)
            yield ids, vectors.reshape(len(rows), dim)
            last = int(ids[-1])

    def aliases(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for row in self._db.execute("SELECT sha256, source FROM aliases ORDER BY sha256, source"):
            groups.setdefault(row["sha256"], []).append(row["source"])
        return groups

    def by_sha(self, hashes: Iterable[str]) -> dict[str, Entry]:
        return {row["sha256"]: _entry(row) for row in self._rows_in("*", "sha256", list(hashes))}

    def count(self, label: str | None = None) -> int:
        if label is None:
            return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        return int(
            self._db.execute("SELECT COUNT(*) FROM entries WHERE label = ?", (label,)).fetchone()[0]
        )

    def max_id(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM entries").fetchone()[0])

    def label_counts(self) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT COALESCE(label, '') AS label, COUNT(*) AS n FROM entries GROUP BY label"
        )
        return {row["label"]: row["n"] for row in rows}
