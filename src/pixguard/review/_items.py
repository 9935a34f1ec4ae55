"""What happens to a queued item outside a decision: it enters the queue, is claimed
under a lease or given back, and loses its bytes past the retention limit.

Each function runs inside the caller's transaction (``db``).
"""

from __future__ import annotations

import json
import sqlite3

from ..classify import Prediction
from ..policy import Decision
from ._records import ItemState, ReviewItem, item_from_row, suffix_of

__all__ = ["claim_in", "enqueue_in", "expire_in", "release_in"]


def enqueue_in(
    db: sqlite3.Connection,
    data: bytes,
    prediction: Prediction,
    decision: Decision,
    *,
    sha256: str,
    source: str,
    key_id: int | None,
    bank_match: bool,
    created: float,
) -> ReviewItem:
    """A new pending item, or the item already waiting (pending or escalated) with
    the same bytes."""
    row = db.execute(
        "SELECT * FROM items WHERE sha256 = ? AND state IN (?, ?) ORDER BY id LIMIT 1",
        (sha256, ItemState.pending, ItemState.escalated),
    ).fetchone()
    if row is None:
        cursor = db.execute(
            "INSERT INTO items (sha256, source, suffix, model, nsfw_score, model_label,"
            " probabilities, reason, policy_version, bank_match, key_id, created, state,"
            " has_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
            (
                sha256,
                source,
                suffix_of(data),
                prediction.model,
                prediction.nsfw_score,
                prediction.label,
                json.dumps(prediction.probabilities),
                decision.reason,
                decision.policy_version,
                int(bank_match),
                key_id,
                created,
                ItemState.pending,
            ),
        )
        row = db.execute("SELECT * FROM items WHERE id = ?", (cursor.lastrowid,)).fetchone()
    return item_from_row(row)


def claim_in(
    db: sqlite3.Connection,
    reviewer: str,
    *,
    queue: ItemState,
    limit: int,
    now: float,
    lease_until: float,
) -> list[ReviewItem]:
    """Up to ``limit`` items of ``queue``, claimed by ``reviewer`` until ``lease_until``:
    the reviewer's own first, then unclaimed or lapsed ones; never one they skipped."""
    rows = db.execute(
        "UPDATE items SET claimed_by = ?, lease_until = ? WHERE id IN ("
        " SELECT id FROM items WHERE state = ? AND has_bytes = 1 AND ("
        "  claimed_by = ? OR claimed_by IS NULL OR lease_until < ?)"
        " AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.item_id = items.id"
        "  AND d.decision = 'skip' AND d.reviewer = ? AND d.from_state = items.state"
        "  AND d.id NOT IN (SELECT undoes FROM decisions WHERE undoes IS NOT NULL))"
        " ORDER BY (claimed_by IS NOT ? ), id LIMIT ?) RETURNING *",
        (reviewer, lease_until, queue, reviewer, now, reviewer, reviewer, limit),
    ).fetchall()
    return sorted((item_from_row(row) for row in rows), key=lambda item: item.id)


def release_in(db: sqlite3.Connection, item_id: int, reviewer: str) -> None:
    db.execute(
        "UPDATE items SET claimed_by = NULL, lease_until = NULL WHERE id = ? AND claimed_by = ?",
        (item_id, reviewer),
    )


def expire_in(db: sqlite3.Connection, cutoff: float) -> list[str]:
    """Mark the bytes of items created before ``cutoff`` gone; undecided ones become
    ``expired``. Returns each such item's sha256 (the caller deletes the files)."""
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
    return [row["sha256"] for row in rows]
