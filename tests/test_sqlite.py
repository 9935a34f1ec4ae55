"""The one SQLite helper and the four databases built on it (index, audit log, API
keys, training's embedding cache): a failed write rolls back and never jams later ones."""

from __future__ import annotations

import sqlite3
import stat
import threading

import numpy as np
import pytest

from pixguard._sqlite import connect, transaction
from pixguard.serve import AuditLog, KeyStore


def test_connect_sets_the_pragmas(tmp_path):
    db = connect(tmp_path / "a.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    db.close()


def test_transaction_rolls_back_and_the_connection_stays_usable(tmp_path):
    db = connect(tmp_path / "a.db")
    db.execute("CREATE TABLE t (x INTEGER NOT NULL)")

    def insert_then_fail() -> None:
        with transaction(db):
            db.execute("INSERT INTO t VALUES (1)")
            db.execute("INSERT INTO t VALUES (NULL)")

    with pytest.raises(sqlite3.IntegrityError):
        insert_then_fail()
    assert not db.in_transaction
    with transaction(db, threading.Lock()):
        db.execute("INSERT INTO t VALUES (2)")
    assert [r[0] for r in db.execute("SELECT x FROM t")] == [2]
    db.close()


def test_a_failed_audit_insert_does_not_jam_the_next(tmp_path):
    audit = AuditLog(tmp_path / "audit.db")
    with pytest.raises(sqlite3.Error):
        audit.record([{"request_id": "bad", "label": object()}])  # cannot be bound
    audit.record([{"request_id": "good", "label": "sfw", "nsfw_score": 0.1}])
    rows = audit.query()
    assert [r["request_id"] for r in rows] == ["good"]
    audit.close()


def test_a_failed_embedding_cache_write_does_not_jam_the_next(tmp_path):
    from pixguard.train._embedding_cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path / "cache.db")
    with pytest.raises(AttributeError):
        cache.put("m", {"a": "not an array"})  # type: ignore[dict-item]
    cache.put("m", {"b": np.ones(3, dtype=np.float32)})
    assert set(cache.get("m", ["a", "b"])) == {"b"}
    cache.close()


def test_key_and_audit_databases_are_private(tmp_path):
    keys = KeyStore(tmp_path / "keys.db")
    keys.create("ci")
    audit = AuditLog(tmp_path / "audit.db")
    audit.record([{"label": "sfw"}])
    for name in ("keys.db", "audit.db"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
        wal = tmp_path / f"{name}-wal"
        if wal.exists():
            assert stat.S_IMODE(wal.stat().st_mode) == 0o600, wal
    keys.close()
    audit.close()
