"""API keys: Bearer tokens, stored only as SHA-256 hashes in SQLite."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from .._sqlite import connect

__all__ = ["ApiKey", "KeyStore", "Role"]

_PREFIX = "pgk"
#: Key ids are SQLite integers (at most 2**63 - 1); 18 digits always fit.
_MAX_ID_DIGITS = 18


class Role(StrEnum):
    """What a key may do; each role may do everything the roles before it may."""

    client = "client"  # classify; sees its own decisions and jobs
    reviewer = "reviewer"  # also works the review queue
    admin = "admin"  # everything, including the escalation queue and every key's rows

    def includes(self, other: Role) -> bool:
        return _RANK[self] >= _RANK[other]


_RANK = {Role.client: 0, Role.reviewer: 1, Role.admin: 2}


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    created: float
    revoked: bool
    role: Role = Role.client


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
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(keys)")}
        if "role" not in columns:
            # Keys made before roles existed become clients.
            self._db.execute("ALTER TABLE keys ADD COLUMN role TEXT NOT NULL DEFAULT 'client'")

    def close(self) -> None:
        self._db.close()

    def create(self, name: str, role: Role | str = Role.client) -> tuple[ApiKey, str]:
        """A new key and its token; the token is shown once and never stored."""
        role = Role(role)
        secret = secrets.token_urlsafe(24)
        now = time.time()
        cursor = self._db.execute(
            "INSERT INTO keys (name, digest, created, role) VALUES (?, ?, ?, ?)",
            (name, _digest(secret), now, role),
        )
        key_id = cursor.lastrowid
        if key_id is None:  # sqlite3 sets it after every INSERT that stores a row
            raise sqlite3.DatabaseError("the key was not stored")
        return ApiKey(key_id, name, now, False, role), f"{_PREFIX}_{key_id}_{secret}"

    def verify(self, token: str) -> ApiKey | None:
        prefix, _, rest = token.partition("_")
        key_id, _, secret = rest.partition("_")
        # isdigit() alone accepts non-ASCII digits such as "²", which int() refuses.
        well_formed = key_id.isascii() and key_id.isdigit() and len(key_id) <= _MAX_ID_DIGITS
        if prefix != _PREFIX or not well_formed or not secret:
            return None
        row = self._db.execute(
            "SELECT id, name, digest, created, revoked, role FROM keys WHERE id = ?",
            (int(key_id),),
        ).fetchone()
        if row is None or row[4] or not hmac.compare_digest(row[2], _digest(secret)):
            return None
        return ApiKey(row[0], row[1], row[3], False, Role(row[5]))

    def get(self, key_id: int) -> ApiKey | None:
        """The active (not revoked) key ``key_id``."""
        row = self._db.execute(
            "SELECT id, name, created, role FROM keys WHERE id = ? AND revoked = 0", (key_id,)
        ).fetchone()
        return None if row is None else ApiKey(row[0], row[1], row[2], False, Role(row[3]))

    def list(self) -> list[ApiKey]:
        rows = self._db.execute(
            "SELECT id, name, created, revoked, role FROM keys ORDER BY id"
        ).fetchall()
        return [ApiKey(r[0], r[1], r[2], bool(r[3]), Role(r[4])) for r in rows]

    def revoke(self, key_id: int) -> bool:
        return (
            self._db.execute(
                "UPDATE keys SET revoked = 1 WHERE id = ? AND revoked = 0", (key_id,)
            ).rowcount
            > 0
        )
