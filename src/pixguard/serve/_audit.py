"""The audit log: every decision, appended to SQLite (WAL) and queryable.

Requests append through :meth:`AuditLog.append`, which commits in groups: one
writer thread commits the rows of every request waiting at that moment in one
transaction (one fsync with ``synchronous=FULL``), and each request's answer waits
until its rows are committed, so an acknowledged decision is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
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

_Rows = list[dict[str, Any]]
# One request's rows, the future its request awaits, and that future's loop.
_Waiting = tuple[_Rows, "asyncio.Future[None]", asyncio.AbstractEventLoop]
_Outcome = tuple["asyncio.Future[None]", Exception | None]


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
        self._waiting: list[_Waiting] = []
        self._closing = False
        self._wake = threading.Condition()
        self._writer = threading.Thread(
            target=self._write_groups, name="pixguard-store-audit", daemon=True
        )
        self._writer.start()

    def close(self) -> None:
        """Commit what is waiting, stop the writer, close the database."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._writer.join()
        self._db.close()

    async def append(self, rows: _Rows) -> None:
        """Append one request's decisions; returns once they are durable, committed in
        one transaction with those of the other requests waiting at the same time."""
        loop = asyncio.get_running_loop()
        committed: asyncio.Future[None] = loop.create_future()
        with self._wake:
            if self._closing:
                raise RuntimeError("the audit log is closed")
            self._waiting.append((rows, committed, loop))
            self._wake.notify()
        await committed

    def _write_groups(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and not self._closing:
                    self._wake.wait()
                if not self._waiting:
                    return  # closing, and nothing is left
                group, self._waiting = self._waiting, []
            outcomes = self._commit(group)
            # One wake-up per event loop for the whole group, not one per request.
            by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
            for (_, committed, loop), outcome in zip(group, outcomes, strict=True):
                by_loop.setdefault(loop, []).append((committed, outcome))
            for loop, settled in by_loop.items():
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits
                    loop.call_soon_threadsafe(_settle, settled)

    def _commit(self, group: list[_Waiting]) -> list[Exception | None]:
        """One transaction for the whole group. If it fails, each request's rows are
        tried alone, so one bad row fails only its own request."""
        try:
            self.record([row for rows, _, _ in group for row in rows])
            return [None] * len(group)
        except Exception as exc:
            if len(group) == 1:
                return [exc]
        outcomes: list[Exception | None] = []
        for rows, _, _ in group:
            try:
                self.record(rows)
                outcomes.append(None)
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def record(self, rows: _Rows) -> None:
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


def _settle(settled: list[_Outcome]) -> None:
    for committed, outcome in settled:
        if committed.cancelled():
            continue  # the request gave up (timeout, disconnect); its rows stay committed
        if outcome is None:
            committed.set_result(None)
        else:
            committed.set_exception(outcome)
