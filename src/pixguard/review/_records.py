"""What the review queue stores: its two tables (items and the append-only decision
log), their rows as :class:`ReviewItem` and :class:`DecisionRecord`, and the image
formats an item's suffix and media type come from."""

from __future__ import annotations

import io
import json
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from PIL import Image, UnidentifiedImageError

from .._exceptions import ReviewItemNotFoundError

__all__ = [
    "FINAL_DECISIONS",
    "REVIEWER_DECISIONS",
    "SCHEMA",
    "DecisionKind",
    "DecisionRecord",
    "ItemState",
    "ReviewItem",
    "item_from_row",
    "item_row",
    "record_from_row",
    "suffix_of",
]

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
#: The decisions that settle an item (and can overturn the model).
FINAL_DECISIONS = (DecisionKind.allow, DecisionKind.remove)


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


def suffix_of(data: bytes) -> str:
    """The suffix an item's image is exported with (``.bin`` when Pillow cannot tell)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return _FORMATS.get(image.format or "", _UNKNOWN)[0]
    except (UnidentifiedImageError, OSError, ValueError):
        return _UNKNOWN[0]


SCHEMA = """
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


def item_row(db: sqlite3.Connection, item_id: int) -> sqlite3.Row:
    """The ``items`` row of ``item_id`` (``review_item_not_found`` when there is none)."""
    row = db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
    if row is None:
        raise ReviewItemNotFoundError(f"no review item {item_id}")
    return row


def item_from_row(row: sqlite3.Row) -> ReviewItem:
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


def record_from_row(row: sqlite3.Row) -> DecisionRecord:
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
