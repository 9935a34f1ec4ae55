"""The review queue: items a policy routed to people, claims under leases, and an
append-only log of the people's decisions.

Everything lives in the data dir: ``review.db`` (SQLite, WAL) and the queued images'
bytes under ``review-images/``, one private file per sha256. Several processes (the
service's workers, the CLI) may share one queue: every state change is one
``BEGIN IMMEDIATE`` transaction, so two reviewers can never claim the same item.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from .._exceptions import ReviewConflictError, ReviewInvalidError, ReviewItemNotFoundError
from .._sqlite import connect, transaction
from ..classify import Prediction
from ..policy import Action, Decision

__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_RETENTION_S",
    "MAX_BULK",
    "MAX_CLAIM",
    "REVIEWER_DECISIONS",
    "DecisionKind",
    "DecisionRecord",
    "ItemState",
    "ReviewItem",
    "ReviewQueue",
]

DEFAULT_LEASE_S = 300.0
DEFAULT_RETENTION_S = 30 * 24 * 3600.0
MAX_CLAIM = 100
# A long-running service purges as it goes: at most this often, or a tenth of the
# retention limit when that is shorter.
PURGE_INTERVAL_S = 3600.0
MAX_BULK = 1000
_SECONDS_PER_DAY = 86400

_DIR_MODE = 0o700
_FILE_MODE = 0o600
# Pillow format -> the suffix `pixguard finetune` reads back from an exported
# ImageFolder, and the media type the image is served with.
_FORMATS = {
    "JPEG": (".jpg", "image/jpeg"),
    "MPO": (".jpg", "image/jpeg"),
    "PNG": (".png", "image/png"),
    "GIF": (".gif", "image/gif"),
    "WEBP": (".webp", "image/webp"),
    "BMP": (".bmp", "image/bmp"),
    "TIFF": (".tif", "image/tiff"),
    "AVIF": (".avif", "image/avif"),
}
_MEDIA_TYPES = dict(_FORMATS.values())
_UNKNOWN = (".bin", "application/octet-stream")


class ItemState(StrEnum):
    pending = "pending"  # in the reviewers' queue
    escalated = "escalated"  # in the admins' escalation queue
    decided = "decided"  # allowed or removed by a person
    expired = "expired"  # undecided past the retention limit; its bytes are gone


class DecisionKind(StrEnum):
    allow = "allow"
    remove = "remove"
    escalate = "escalate"
    skip = "skip"
    undo = "undo"  # takes back an earlier decision (named by ``undoes``)
    appeal = "appeal"  # sends a decided item to the escalation queue again


#: What a reviewer may record on a claimed item.
REVIEWER_DECISIONS = (
    DecisionKind.allow,
    DecisionKind.remove,
    DecisionKind.escalate,
    DecisionKind.skip,
)
_FINAL = (DecisionKind.allow, DecisionKind.remove)


@dataclass(frozen=True)
class ReviewItem:
    """One queued image and what the model and the policy said about it."""

    id: int
    sha256: str
    source: str
    suffix: str
    model: str
    nsfw_score: float | None
    model_label: str | None
    probabilities: dict[str, float]
    reason: str
    policy_version: str
    bank_match: bool
    key_id: int | None
    created: float
    state: ItemState
    claimed_by: str | None
    lease_until: float | None
    has_bytes: bool

    @property
    def media_type(self) -> str:
        return _MEDIA_TYPES.get(self.suffix, _UNKNOWN[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sha256": self.sha256,
            "source": self.source,
            "model": self.model,
            "nsfw_score": self.nsfw_score,
            "model_label": self.model_label,
            "probabilities": self.probabilities,
            "reason": self.reason,
            "policy_version": self.policy_version,
            "bank_match": self.bank_match,
            "created": self.created,
            "state": self.state.value,
            "claimed_by": self.claimed_by,
            "lease_until": self.lease_until,
            "has_image": self.has_bytes,
        }


@dataclass(frozen=True)
class DecisionRecord:
    """One row of the append-only decision log."""

    id: int
    item_id: int
    sha256: str
    decision: DecisionKind
    reviewer: str
    note: str | None
    time: float
    nsfw_score: float | None
    model_label: str | None
    overturned: bool | None
    undoes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "item_id": self.item_id,
            "sha256": self.sha256,
            "decision": self.decision.value,
            "reviewer": self.reviewer,
            "note": self.note,
            "time": self.time,
            "nsfw_score": self.nsfw_score,
            "model_label": self.model_label,
            "overturned": self.overturned,
            "undoes": self.undoes,
        }


@dataclass
class _Blobs:
    """Image bytes by sha256, in private files (0600 in a 0700 folder)."""

    root: Path
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, _DIR_MODE)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, sha256: str, data: bytes) -> None:
        target = self.path(sha256)
        if target.exists():
            return
        with self._lock:
            target.parent.mkdir(mode=_DIR_MODE, exist_ok=True)
            temporary = target.with_name(f".{sha256}.{os.getpid()}.{threading.get_ident()}.tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
            try:
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, target)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise

    def get(self, sha256: str) -> bytes | None:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)


def _suffix_of(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return _FORMATS.get(image.format or "", _UNKNOWN)[0]
    except (UnidentifiedImageError, OSError, ValueError):
        return _UNKNOWN[0]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256 TEXT NOT NULL,
    source TEXT NOT NULL,
    suffix TEXT NOT NULL,
    model TEXT NOT NULL,
    nsfw_score REAL,
    model_label TEXT,
    probabilities TEXT NOT NULL,
    reason TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    bank_match INTEGER NOT NULL,
    key_id INTEGER,
    created REAL NOT NULL,
    state TEXT NOT NULL,
    claimed_by TEXT,
    lease_until REAL,
    has_bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS items_state ON items(state, id);
CREATE INDEX IF NOT EXISTS items_sha256 ON items(sha256);
CREATE INDEX IF NOT EXISTS items_created ON items(created);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL REFERENCES items(id),
    sha256 TEXT NOT NULL,
    decision TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    note TEXT,
    time REAL NOT NULL,
    nsfw_score REAL,
    model_label TEXT,
    overturned INTEGER,
    from_state TEXT NOT NULL,
    undoes INTEGER REFERENCES decisions(id)
);
CREATE INDEX IF NOT EXISTS decisions_item ON decisions(item_id, id);
CREATE INDEX IF NOT EXISTS decisions_time ON decisions(time);
CREATE TRIGGER IF NOT EXISTS decisions_append_only_update BEFORE UPDATE ON decisions
BEGIN SELECT RAISE(ABORT, 'decisions are append-only: record a new decision instead'); END;
CREATE TRIGGER IF NOT EXISTS decisions_append_only_delete BEFORE DELETE ON decisions
BEGIN SELECT RAISE(ABORT, 'decisions are append-only: record a new decision instead'); END;
"""


class ReviewQueue:
    """The review queue in ``data_dir`` (``review.db`` and ``review-images/``).

    >>> with ReviewQueue.open("pixguard-data") as queue:               # doctest: +SKIP
    ...     item = queue.enqueue(data, prediction, decision)
    ...     [claimed] = queue.claim("alice", limit=1)
    ...     queue.decide(claimed.id, "alice", "remove", note="explicit")

    Args:
        lease_s: how long a claim lasts; then the item returns to the queue.
        retention_s: queued bytes older than this are deleted (undecided items
            become ``expired``).
        keep_for_training: keep the bytes of decided items (until the retention
            limit) so ``export`` can write them as a training set.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        lease_s: float = DEFAULT_LEASE_S,
        retention_s: float = DEFAULT_RETENTION_S,
        keep_for_training: bool = True,
    ) -> None:
        if lease_s <= 0 or retention_s <= 0:
            raise ReviewInvalidError("lease_s and retention_s must be positive")
        self.data_dir = Path(data_dir)
        self.lease_s = lease_s
        self.retention_s = retention_s
        self.keep_for_training = keep_for_training
        self._db = connect(self.data_dir / "review.db", private=True)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._blobs = _Blobs(self.data_dir / "review-images")
        self._purge_every = min(PURGE_INTERVAL_S, retention_s / 10)
        self._next_purge = 0.0
        self._maybe_purge()

    def _maybe_purge(self) -> None:
        now = time.monotonic()
        if now >= self._next_purge:
            self._next_purge = now + self._purge_every
            self.purge()

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], **options: Any) -> ReviewQueue:
        return cls(data_dir, **options)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ReviewQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- entering the queue -------------------------------------------------------

    def enqueue(
        self,
        data: bytes,
        prediction: Prediction,
        decision: Decision,
        *,
        source: str | None = None,
        key_id: int | None = None,
        bank_match: bool = False,
        sha256: str | None = None,
    ) -> ReviewItem:
        """Queue one image the policy routed to ``review``.

        The same bytes already waiting (pending or escalated) are not queued twice:
        the waiting item is returned.
        """
        if decision.action is not Action.review:
            raise ReviewInvalidError(
                f"only items routed to review are queued, not {decision.action.value!r}"
            )
        self._maybe_purge()
        digest = sha256 or hashlib.sha256(data).hexdigest()
        now = time.time()
        self._blobs.put(digest, data)
        with transaction(self._db, self._lock) as db:
            row = db.execute(
                "SELECT * FROM items WHERE sha256 = ? AND state IN (?, ?) ORDER BY id LIMIT 1",
                (digest, ItemState.pending, ItemState.escalated),
            ).fetchone()
            if row is None:
                cursor = db.execute(
                    "INSERT INTO items (sha256, source, suffix, model, nsfw_score, model_label,"
                    " probabilities, reason, policy_version, bank_match, key_id, created, state,"
                    " has_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                    (
                        digest,
                        source if source is not None else prediction.source,
                        _suffix_of(data),
                        prediction.model,
                        prediction.nsfw_score,
                        prediction.label,
                        json.dumps(prediction.probabilities),
                        decision.reason,
                        decision.policy_version,
                        int(bank_match),
                        key_id,
                        now,
                        ItemState.pending,
                    ),
                )
                row = db.execute("SELECT * FROM items WHERE id = ?", (cursor.lastrowid,)).fetchone()
        return _item(row)

    # --- claims ---------------------------------------------------------------------

    def claim(
        self, reviewer: str, *, limit: int = 1, queue: ItemState = ItemState.pending
    ) -> list[ReviewItem]:
        """Claim up to ``limit`` items, oldest first, under a lease of ``lease_s``.

        Items this reviewer already holds come first (a reloaded page gets its own
        items back); then unclaimed items, and items whose lease ran out. An item the
        reviewer skipped is not offered to them again.
        """
        _check_reviewer(reviewer)
        if not 1 <= limit <= MAX_CLAIM:
            raise ReviewInvalidError(f"limit must be between 1 and {MAX_CLAIM}, not {limit}")
        if queue not in (ItemState.pending, ItemState.escalated):
            raise ReviewInvalidError(f"there is no {queue!r} queue to claim from")
        self._maybe_purge()
        now = time.time()
        with transaction(self._db, self._lock) as db:
            rows = db.execute(
                "UPDATE items SET claimed_by = ?, lease_until = ? WHERE id IN ("
                " SELECT id FROM items WHERE state = ? AND has_bytes = 1 AND ("
                "  claimed_by = ? OR claimed_by IS NULL OR lease_until < ?)"
                " AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.item_id = items.id"
                "  AND d.decision = 'skip' AND d.reviewer = ? AND d.from_state = items.state"
                "  AND d.id NOT IN (SELECT undoes FROM decisions WHERE undoes IS NOT NULL))"
                " ORDER BY (claimed_by IS NOT ? ), id LIMIT ?) RETURNING *",
                (reviewer, now + self.lease_s, queue, reviewer, now, reviewer, reviewer, limit),
            ).fetchall()
        return sorted((_item(row) for row in rows), key=lambda item: item.id)

    def release(self, item_id: int, reviewer: str) -> None:
        """Give a claimed item back to the queue before its lease ends."""
        with transaction(self._db, self._lock) as db:
            db.execute(
                "UPDATE items SET claimed_by = NULL, lease_until = NULL"
                " WHERE id = ? AND claimed_by = ?",
                (item_id, reviewer),
            )

    # --- decisions ------------------------------------------------------------------

    def decide(
        self,
        item_id: int,
        reviewer: str,
        decision: str | DecisionKind,
        *,
        note: str | None = None,
        admin: bool = False,
        keep: bool | None = None,
    ) -> DecisionRecord:
        """Record ``allow``, ``remove``, ``escalate`` or ``skip`` on a claimed item.

        The reviewer must hold the item's claim (a lapsed lease still counts until
        someone else claims the item). Escalated items are decided by admins only.
        ``keep`` overrides ``keep_for_training`` for this item's bytes.
        """
        kind = _reviewer_decision(decision)
        _check_reviewer(reviewer)
        with transaction(self._db, self._lock) as db:
            record, drop = self._decide_in(db, item_id, reviewer, kind, note, admin, keep)
        if drop is not None:
            self._drop_bytes(drop)
        return record

    def bulk_decide(
        self,
        reviewer: str,
        decisions: Iterable[tuple[int, str | DecisionKind, str | None]],
        *,
        admin: bool = False,
    ) -> list[DecisionRecord | ReviewConflictError | ReviewItemNotFoundError]:
        """Decide up to ``MAX_BULK`` claimed items in one transaction.

        Each entry gets its record or its error; one bad entry never sinks the rest.
        """
        _check_reviewer(reviewer)
        entries = list(decisions)
        if not 1 <= len(entries) <= MAX_BULK:
            raise ReviewInvalidError(f"a bulk decision holds 1 to {MAX_BULK} items")
        parsed = [(item_id, _reviewer_decision(kind), note) for item_id, kind, note in entries]
        results: list[DecisionRecord | ReviewConflictError | ReviewItemNotFoundError] = []
        dropped: list[str] = []
        with transaction(self._db, self._lock) as db:
            for item_id, kind, note in parsed:
                try:
                    record, drop = self._decide_in(db, item_id, reviewer, kind, note, admin, None)
                except (ReviewConflictError, ReviewItemNotFoundError) as exc:
                    results.append(exc)
                    continue
                results.append(record)
                if drop is not None:
                    dropped.append(drop)
        for digest in dropped:
            self._drop_bytes(digest)
        return results

    def _decide_in(
        self,
        db: sqlite3.Connection,
        item_id: int,
        reviewer: str,
        kind: DecisionKind,
        note: str | None,
        admin: bool,
        keep: bool | None,
    ) -> tuple[DecisionRecord, str | None]:
        row = _item_row(db, item_id)
        state = ItemState(row["state"])
        if state not in (ItemState.pending, ItemState.escalated):
            raise ReviewConflictError(f"item {item_id} is {state.value}, not waiting for review")
        if state is ItemState.escalated and not admin:
            raise ReviewConflictError(f"item {item_id} is escalated: only admins decide it")
        if row["claimed_by"] != reviewer:
            raise ReviewConflictError(
                f"item {item_id} is not claimed by {reviewer!r}; claim it first"
                " (GET /v1/review/next)"
            )
        new_state = {
            DecisionKind.allow: ItemState.decided,
            DecisionKind.remove: ItemState.decided,
            DecisionKind.escalate: ItemState.escalated,
            DecisionKind.skip: state,
        }[kind]
        if kind is DecisionKind.escalate and state is ItemState.escalated:
            raise ReviewConflictError(f"item {item_id} is already escalated")
        record = _append(db, row, kind, reviewer, note, from_state=state)
        db.execute(
            "UPDATE items SET state = ?, claimed_by = NULL, lease_until = NULL WHERE id = ?",
            (new_state, item_id),
        )
        keep_bytes = self.keep_for_training if keep is None else keep
        drop = None
        if new_state is ItemState.decided and not keep_bytes:
            db.execute("UPDATE items SET has_bytes = 0 WHERE id = ?", (item_id,))
            drop = row["sha256"]
        return record, drop

    def undo(self, decision_id: int, reviewer: str, *, admin: bool = False) -> DecisionRecord:
        """Take back a decision by appending an ``undo``: the item returns to the queue
        it was in, claimed by ``reviewer``, so it can be decided again.

        Only the latest decision on an item can be undone, by its reviewer or an admin.
        """
        _check_reviewer(reviewer)
        with transaction(self._db, self._lock) as db:
            target = db.execute("SELECT * FROM decisions WHERE id = ?", (decision_id,)).fetchone()
            if target is None:
                raise ReviewItemNotFoundError(f"no decision {decision_id}")
            kind = DecisionKind(target["decision"])
            if kind not in REVIEWER_DECISIONS:
                raise ReviewConflictError(f"a {kind.value} decision cannot be undone")
            if target["reviewer"] != reviewer and not admin:
                raise ReviewConflictError(f"decision {decision_id} was made by another reviewer")
            latest = db.execute(
                "SELECT MAX(id) FROM decisions WHERE item_id = ?", (target["item_id"],)
            ).fetchone()[0]
            if latest != decision_id:
                raise ReviewConflictError(
                    f"decision {decision_id} is not the latest on item {target['item_id']}"
                )
            row = _item_row(db, target["item_id"])
            if not row["has_bytes"]:
                raise ReviewConflictError(
                    f"item {row['id']}'s image was deleted after the decision; it cannot be"
                    " reviewed again"
                )
            if (
                row["claimed_by"] not in (None, reviewer)
                and (row["lease_until"] or 0) >= time.time()
            ):
                raise ReviewConflictError(f"item {row['id']} is claimed by another reviewer")
            record = _append(
                db,
                row,
                DecisionKind.undo,
                reviewer,
                None,
                from_state=ItemState(row["state"]),
                undoes=decision_id,
            )
            db.execute(
                "UPDATE items SET state = ?, claimed_by = ?, lease_until = ? WHERE id = ?",
                (target["from_state"], reviewer, time.time() + self.lease_s, row["id"]),
            )
        return record

    def appeal(
        self,
        *,
        sha256: str | None = None,
        decision_id: int | None = None,
        appellant: str,
        note: str | None = None,
        key_id: int | None = None,
    ) -> DecisionRecord:
        """Send a decided item (by its image's sha256, or a decision id) to the
        escalation queue again. With ``key_id``, only items that key submitted can
        be appealed (others are not found)."""
        if (sha256 is None) == (decision_id is None):
            raise ReviewInvalidError("an appeal names either a sha256 or a decision id")
        _check_reviewer(appellant)
        with transaction(self._db, self._lock) as db:
            if decision_id is not None:
                found = db.execute(
                    "SELECT item_id FROM decisions WHERE id = ?", (decision_id,)
                ).fetchone()
                if found is None:
                    raise ReviewItemNotFoundError(f"no decision {decision_id}")
                row = _item_row(db, found[0])
                if key_id is not None and row["key_id"] != key_id:
                    raise ReviewItemNotFoundError(f"no decision {decision_id}")
            else:
                mine = "" if key_id is None else " AND key_id = ?"
                row = db.execute(
                    f"SELECT * FROM items WHERE sha256 = ? AND state = ?{mine}"
                    " ORDER BY id DESC LIMIT 1",
                    (sha256, ItemState.decided, *(() if key_id is None else (key_id,))),
                ).fetchone()
                if row is None:
                    raise ReviewItemNotFoundError(f"no decided item with sha256 {sha256}")
            if row["state"] != ItemState.decided:
                raise ReviewConflictError(
                    f"item {row['id']} is {row['state']}; only decided items can be appealed"
                )
            if not row["has_bytes"]:
                raise ReviewConflictError(
                    f"item {row['id']}'s image was deleted after the decision; keep decided"
                    " images (keep_for_training) to allow appeals"
                )
            record = _append(
                db, row, DecisionKind.appeal, appellant, note, from_state=ItemState.decided
            )
            db.execute(
                "UPDATE items SET state = ?, claimed_by = NULL, lease_until = NULL WHERE id = ?",
                (ItemState.escalated, row["id"]),
            )
        return record

    # --- reading --------------------------------------------------------------------

    def item(self, item_id: int) -> ReviewItem:
        with self._lock:
            return _item(_item_row(self._db, item_id))

    def image(self, item_id: int) -> tuple[ReviewItem, bytes]:
        """An item and its image bytes (``review_conflict`` once they are deleted)."""
        item = self.item(item_id)
        data = self._blobs.get(item.sha256) if item.has_bytes else None
        if data is None:
            raise ReviewConflictError(f"item {item_id}'s image is no longer stored")
        return item, data

    def decisions(
        self,
        *,
        item_id: int | None = None,
        reviewer: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[DecisionRecord]:
        clauses = ["id > ?"]
        params: list[int | str] = [after_id]
        if item_id is not None:
            clauses.append("item_id = ?")
            params.append(item_id)
        if reviewer is not None:
            clauses.append("reviewer = ?")
            params.append(reviewer)
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM decisions WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [_record(row) for row in rows]

    def stats(self, *, bucket_s: float = _SECONDS_PER_DAY) -> dict[str, Any]:
        """Queue depth, decisions by kind, agreement with the model, the oldest item's
        age, and decisions by kind per ``bucket_s`` (for charts)."""
        now = time.time()
        with self._lock:
            depth = dict(
                self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall()
            )
            by_kind = dict(
                self._db.execute(
                    "SELECT decision, COUNT(*) FROM decisions GROUP BY decision"
                ).fetchall()
            )
            # Agreement counts only final decisions that still stand (not undone).
            agreement = self._db.execute(
                "SELECT COUNT(*), SUM(overturned) FROM decisions WHERE decision IN (?, ?)"
                " AND id NOT IN (SELECT undoes FROM decisions WHERE undoes IS NOT NULL)",
                _FINAL,
            ).fetchone()
            oldest = self._db.execute(
                "SELECT MIN(created) FROM items WHERE state IN (?, ?)",
                (ItemState.pending, ItemState.escalated),
            ).fetchone()[0]
            timeline = self._db.execute(
                "SELECT CAST(time / ? AS INTEGER) * ? AS bucket, decision, COUNT(*)"
                " FROM decisions GROUP BY bucket, decision ORDER BY bucket",
                (bucket_s, bucket_s),
            ).fetchall()
        final, overturned = agreement[0], agreement[1] or 0
        buckets: dict[float, dict[str, int]] = {}
        for bucket, kind, count in timeline:
            buckets.setdefault(float(bucket), {})[kind] = count
        return {
            "depth": depth.get(ItemState.pending, 0),
            "escalated": depth.get(ItemState.escalated, 0),
            "decided": depth.get(ItemState.decided, 0),
            "expired": depth.get(ItemState.expired, 0),
            "decisions": {kind.value: by_kind.get(kind.value, 0) for kind in DecisionKind},
            "final_decisions": final,
            "overturned": overturned,
            "agreement": None if not final else (final - overturned) / final,
            "oldest_age_s": None if oldest is None else now - oldest,
            "timeline": [
                {"start": start, "decisions": counts} for start, counts in buckets.items()
            ],
        }

    # --- retention and export -------------------------------------------------------

    def purge(self, *, now: float | None = None) -> int:
        """Delete the bytes of items older than the retention limit; undecided ones
        become ``expired``. Returns how many items lost their bytes."""
        cutoff = (time.time() if now is None else now) - self.retention_s
        with transaction(self._db, self._lock) as db:
            rows = db.execute(
                "SELECT id, sha256, state FROM items WHERE created < ? AND has_bytes = 1",
                (cutoff,),
            ).fetchall()
            for row in rows:
                state = row["state"]
                if state in (ItemState.pending, ItemState.escalated):
                    state = ItemState.expired
                db.execute(
                    "UPDATE items SET has_bytes = 0, state = ?, claimed_by = NULL,"
                    " lease_until = NULL WHERE id = ?",
                    (state, row["id"]),
                )
        for digest in {row["sha256"] for row in rows}:
            self._drop_bytes(digest)
        return len(rows)

    def _drop_bytes(self, sha256: str) -> None:
        # Content-addressed: the file goes only when no item still needs it.
        with self._lock:
            needed = self._db.execute(
                "SELECT 1 FROM items WHERE sha256 = ? AND has_bytes = 1 LIMIT 1", (sha256,)
            ).fetchone()
        if needed is None:
            self._blobs.delete(sha256)

    def iter_final(self) -> Iterator[tuple[ReviewItem, DecisionRecord]]:
        """Decided items with their standing ``allow``/``remove`` decision and bytes."""
        with self._lock:
            rows = self._db.execute(
                "SELECT i.*, d.id AS decision_id FROM items i JOIN decisions d"
                " ON d.id = (SELECT MAX(id) FROM decisions WHERE item_id = i.id"
                "  AND decision IN (?, ?)"
                "  AND id NOT IN (SELECT undoes FROM decisions WHERE undoes IS NOT NULL))"
                " WHERE i.state = ? AND i.has_bytes = 1 ORDER BY i.id",
                (*_FINAL, ItemState.decided),
            ).fetchall()
            records = {
                row["decision_id"]: _record(
                    self._db.execute(
                        "SELECT * FROM decisions WHERE id = ?", (row["decision_id"],)
                    ).fetchone()
                )
                for row in rows
            }
        for row in rows:
            yield _item(row), records[row["decision_id"]]

    def read_bytes(self, item: ReviewItem) -> bytes | None:
        return self._blobs.get(item.sha256) if item.has_bytes else None


def _reviewer_decision(decision: str | DecisionKind) -> DecisionKind:
    try:
        kind = DecisionKind(decision)
    except ValueError:
        kind = None
    if kind not in REVIEWER_DECISIONS:
        allowed = ", ".join(k.value for k in REVIEWER_DECISIONS)
        raise ReviewInvalidError(f"decision must be one of {allowed}, not {decision!r}")
    return kind


def _check_reviewer(reviewer: str) -> None:
    if not reviewer or not reviewer.strip():
        raise ReviewInvalidError("a decision needs a reviewer")


def _item_row(db: sqlite3.Connection, item_id: int) -> sqlite3.Row:
    row = db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
    if row is None:
        raise ReviewItemNotFoundError(f"no review item {item_id}")
    return row


def _append(
    db: sqlite3.Connection,
    row: sqlite3.Row,
    kind: DecisionKind,
    reviewer: str,
    note: str | None,
    *,
    from_state: ItemState,
    undoes: int | None = None,
) -> DecisionRecord:
    overturned = None
    if kind in _FINAL and row["model_label"] is not None:
        # The human overturns the model when their verdict differs from its label.
        overturned = (kind is DecisionKind.remove) != (row["model_label"] == "nsfw")
    cursor = db.execute(
        "INSERT INTO decisions (item_id, sha256, decision, reviewer, note, time, nsfw_score,"
        " model_label, overturned, from_state, undoes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            row["id"],
            row["sha256"],
            kind,
            reviewer,
            note,
            time.time(),
            row["nsfw_score"],
            row["model_label"],
            None if overturned is None else int(overturned),
            from_state,
            undoes,
        ),
    )
    return _record(
        db.execute("SELECT * FROM decisions WHERE id = ?", (cursor.lastrowid,)).fetchone()
    )


def _item(row: sqlite3.Row) -> ReviewItem:
    return ReviewItem(
        id=row["id"],
        sha256=row["sha256"],
        source=row["source"],
        suffix=row["suffix"],
        model=row["model"],
        nsfw_score=row["nsfw_score"],
        model_label=row["model_label"],
        probabilities=json.loads(row["probabilities"]),
        reason=row["reason"],
        policy_version=row["policy_version"],
        bank_match=bool(row["bank_match"]),
        key_id=row["key_id"],
        created=row["created"],
        state=ItemState(row["state"]),
        claimed_by=row["claimed_by"],
        lease_until=row["lease_until"],
        has_bytes=bool(row["has_bytes"]),
    )


def _record(row: sqlite3.Row) -> DecisionRecord:
    return DecisionRecord(
        id=row["id"],
        item_id=row["item_id"],
        sha256=row["sha256"],
        decision=DecisionKind(row["decision"]),
        reviewer=row["reviewer"],
        note=row["note"],
        time=row["time"],
        nsfw_score=row["nsfw_score"],
        model_label=row["model_label"],
        overturned=None if row["overturned"] is None else bool(row["overturned"]),
        undoes=row["undoes"],
    )
