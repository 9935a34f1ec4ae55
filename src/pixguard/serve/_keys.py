"""API keys: Bearer tokens, stored only as SHA-256 hashes in SQLite."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .._sqlite import connect

__all__ = ["ApiKey", "KeyStore"]

_PREFIX = "pgk"


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    created: float
    revoked: bool


def _digest(secret: str) -> str:
    # Tokens are 192-bit random: a plain hash cannot be brute-forced, and verifying
    # stays cheap on every request.
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, path: Path) -> None:
        self._db = connect(path, private=True)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS keys (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,"
            " digest TEXT NOT NULL, created REAL NOT NULL, revoked INTEGER NOT NULL DEFAULT 0)"
        )

    def close(self) -> None:
        self._db.close()

    def create(self, name: str) -> tuple[ApiKey, str]:
        """A new key and its token; the token is shown once and never stored."""
        secret = secrets.token_urlsafe(24)
        now = time.time()
        cursor = self._db.execute(
            "INSERT INTO keys (name, digest, created) VALUES (?, ?, ?)",
            (name, _digest(secret), now),
        )
        key_id = cursor.lastrowid
        if key_id is None:  # sqlite3 sets it after every INSERT that stores a row
            raise sqlite3.DatabaseError("the key was not stored")
        return ApiKey(key_id, name, now, False), f"{_PREFIX}_{key_id}_{secret}"

    def verify(self, token: str) -> ApiKey | None:
        prefix, _, rest = token.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != _PREFIX or not key_id.isdigit() or not secret:
            return None
        row = self._db.execute(
            "SELECT id, name, digest, created, revoked FROM keys WHERE id = ?", (int(key_id),)
        ).fetchone()
        if row is None or row[4] or not hmac.compare_digest(row[2], _digest(secret)):
            return None
        return ApiKey(row[0], row[1], row[3], False)

    def list(self) -> list[ApiKey]:
        rows = self._db.execute(
            "SELECT id, name, created, revoked FROM keys ORDER BY id"
        ).fetchall()
        return [ApiKey(r[0], r[1], r[2], bool(r[3])) for r in rows]

    def revoke(self, key_id: int) -> bool:
        return (
            self._db.execute(
                "UPDATE keys SET revoked = 1 WHERE id = ? AND revoked = 0", (key_id,)
            ).rowcount
            > 0
        )
