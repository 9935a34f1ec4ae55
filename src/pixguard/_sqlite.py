"""The one way pixguard opens SQLite: the index, the audit log, API keys and the
training embedding cache all go through :func:`connect` and :func:`transaction`.

Every database runs in WAL mode with ``synchronous=FULL`` (a commit survives power
loss, not only a killed process) and waits for a busy lock instead of failing at
once. A transaction always ends: ROLLBACK on any exception, so one failed write
(a locked database, a full disk, a bad value) never leaves the connection inside
an open transaction where every later write would fail.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["BUSY_TIMEOUT_S", "connect", "transaction"]

#: How long a write waits for another connection's lock before it fails.
BUSY_TIMEOUT_S = 30.0
_PRIVATE_MODE = 0o600


def connect(path: Path, *, private: bool = False) -> sqlite3.Connection:
    """Open (creating if needed) the database at ``path`` in autocommit mode, with
    rows as :class:`sqlite3.Row`. ``private`` databases (API keys, the audit log)
    are created readable by their owner only; SQLite gives the WAL and shared-memory
    files the same permissions as the database."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, _PRIVATE_MODE)
        os.close(descriptor)
        os.chmod(path, _PRIVATE_MODE)  # also tightens a database made before
    db = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def transaction(
    db: sqlite3.Connection, lock: threading.Lock | None = None
) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` when the block raises.

    ``lock`` serialises threads sharing one connection (a transaction belongs to the
    connection, not to the thread)."""
    if lock is not None:
        lock.acquire()
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            # SQLite rolls some errors back itself (a full disk); end what is left.
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        try:
            db.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (disk full, I/O error) may leave the transaction open.
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    finally:
        if lock is not None:
            lock.release()
