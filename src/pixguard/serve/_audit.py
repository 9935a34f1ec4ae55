"""The audit log: every decision, appended to SQLite (WAL) and queryable."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from .._sqlite import connect, transaction

__all__ = ["AuditLog"]

_COLUMNS = (
    "request_id",
    "key_id",
    "sha256",
    "label",
    "nsfw_score",
    "model",
    "threshold",
    "error",
    "action",
    "policy_version",
    "time",
)
# Columns added after the first release, with their types: old logs gain them on open.
_ADDED_COLUMNS = {"action": "TEXT", "policy_version": "TEXT"}


class AuditLog:
    def __init__(self, path: Path) -> None:
        self._db = connect(path, private=True)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT,"
            " key_id INTEGER, sha256 TEXT, label TEXT, nsfw_score REAL, model TEXT, threshold REAL, error TEXT,"
            " time REAL NOT NULL, image BLOB)"
        )
        present = {row[1] for row in self._db.execute("PRAGMA table_info(decisions)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in present:
                self._db.execute(f"ALTER TABLE decisions ADD COLUMN {column} {kind}")
        self._db.execute("CREATE INDEX IF NOT EXISTS decisions_time ON decisions(time)")
        self._db.execute("CREATE INDEX IF NOT EXISTS decisions_key ON decisions(key_id, id)")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def record(self, rows: list[dict[str, Any]]) -> None:
        """Append decisions in one transaction; returns once they are durable."""
        now = time.time()
        with transaction(self._db, self._lock):
            self._db.executemany(
                f"INSERT INTO decisions ({', '.join(_COLUMNS)}, image) VALUES ({', '.join('?' * (len(_COLUMNS) + 1))})",
                [
                    (*(row.get(c) for c in _COLUMNS[:-1]), row.get("time", now), row.get("image"))
                    for row in rows
                ],
            )

    def query(
        self,
        *,
        label: str | None = None,
        action: str | None = None,
        key_id: int | None = None,
        sha256: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        after_id: int = 0,
    ) -> list[dict[str, Any]]:
        """Decisions in id order after ``after_id`` (cursor pagination)."""
        clauses = ["id > ?"]
        params: list[object] = [after_id]
        for column, value, op in (
            ("label", label, "="),
            ("action", action, "="),
            ("key_id", key_id, "="),
            ("sha256", sha256, "="),
            ("time", since, ">="),
            ("time", until, "<"),
        ):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                params.append(value)
        sql = f"SELECT id, {', '.join(_COLUMNS)} FROM decisions WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*params, limit)).fetchall()
        return [dict(row) for row in rows]

    def timeline(self, *, bucket_s: float, key_id: int | None = None) -> list[dict[str, Any]]:
        """Decisions per ``bucket_s`` by action (or by label, without a policy)."""
        clause, params = ("WHERE key_id = ?", [key_id]) if key_id is not None else ("", [])
        sql = (
            "SELECT CAST(time / ? AS INTEGER) * ? AS start, COALESCE(action, label, 'error') AS kind,"
            f" COUNT(*) AS n FROM decisions {clause} GROUP BY start, kind ORDER BY start"
        )
        with self._lock:
            rows = self._db.execute(sql, (bucket_s, bucket_s, *params)).fetchall()
        buckets: dict[float, dict[str, int]] = {}
        for row in rows:
            buckets.setdefault(float(row["start"]), {})[row["kind"]] = row["n"]
        return [{"start": start, "counts": counts} for start, counts in buckets.items()]
