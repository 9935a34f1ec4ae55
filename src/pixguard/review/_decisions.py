"""The append-only decision log: what each decision does to a queued item (who may
record it, the state it moves the item to, its row in the log), and the log read back.

The writers run inside the caller's transaction (``db``), so a rule that fails
leaves nothing behind.
"""

from __future__ import annotations

import sqlite3
import time

from .._exceptions import ReviewConflictError, ReviewInvalidError, ReviewItemNotFoundError
from ._records import (
    FINAL_DECISIONS,
    REVIEWER_DECISIONS,
    DecisionKind,
    DecisionRecord,
    ItemState,
    ReviewItem,
    item_from_row,
    item_row,
    record_from_row,
)

__all__ = [
    "appeal_in",
    "check_reviewer",
    "decide_in",
    "decision_log",
    "reviewer_decision",
    "standing_final_decisions",
    "undo_in",
]


def reviewer_decision(decision: str | DecisionKind) -> DecisionKind:
    try:
        kind = DecisionKind(decision)
    except ValueError:
        kind = None
    if kind not in REVIEWER_DECISIONS:
        allowed = ", ".join(k.value for k in REVIEWER_DECISIONS)
        raise ReviewInvalidError(f"decision must be one of {allowed}, not {decision!r}")
    return kind


def check_reviewer(reviewer: str) -> None:
    if not reviewer or not reviewer.strip():
        raise ReviewInvalidError("a decision needs a reviewer")


def decide_in(
    db: sqlite3.Connection,
    item_id: int,
    reviewer: str,
    kind: DecisionKind,
    note: str | None,
    *,
    admin: bool,
    keep_bytes: bool,
) -> tuple[DecisionRecord, str | None]:
    """Record a reviewer's decision on a claimed item. Returns the record, and the
    sha256 whose bytes the caller should drop (a decided item not kept), if any."""
    row = item_row(db, item_id)
    state = ItemState(row["state"])
    if state not in (ItemState.pending, ItemState.escalated):
        raise ReviewConflictError(f"item {item_id} is {state.value}, not waiting for review")
    if state is ItemState.escalated and not admin:
        raise ReviewConflictError(f"item {item_id} is escalated: only admins decide it")
    if row["claimed_by"] != reviewer:
        raise ReviewConflictError(
            f"item {item_id} is not claimed by {reviewer!r}; claim it first (GET /v1/review/next)"
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
    drop = None
    if new_state is ItemState.decided and not keep_bytes:
        db.execute("UPDATE items SET has_bytes = 0 WHERE id = ?", (item_id,))
        drop = row["sha256"]
    return record, drop


def undo_in(
    db: sqlite3.Connection, decision_id: int, reviewer: str, *, admin: bool, lease_s: float
) -> DecisionRecord:
    """Append an ``undo`` of the item's latest decision; the item returns to the queue
    it was in, claimed by ``reviewer`` for ``lease_s``."""
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
    row = item_row(db, target["item_id"])
    if not row["has_bytes"]:
        raise ReviewConflictError(
            f"item {row['id']}'s image was deleted after the decision; it cannot be reviewed again"
        )
    if row["claimed_by"] not in (None, reviewer) and (row["lease_until"] or 0) >= time.time():
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
        (target["from_state"], reviewer, time.time() + lease_s, row["id"]),
    )
    return record


def appeal_in(
    db: sqlite3.Connection,
    *,
    sha256: str | None,
    decision_id: int | None,
    appellant: str,
    note: str | None,
    key_id: int | None,
) -> DecisionRecord:
    """Append an ``appeal`` on the decided item named by ``sha256`` or ``decision_id``
    and move it to the escalation queue."""
    if decision_id is not None:
        found = db.execute("SELECT item_id FROM decisions WHERE id = ?", (decision_id,)).fetchone()
        if found is None:
            raise ReviewItemNotFoundError(f"no decision {decision_id}")
        row = item_row(db, found[0])
        if key_id is not None and row["key_id"] != key_id:
            raise ReviewItemNotFoundError(f"no decision {decision_id}")
    else:
        mine = "" if key_id is None else " AND key_id = ?"
        row = db.execute(
            f"SELECT * FROM items WHERE sha256 = ? AND state = ?{mine} ORDER BY id DESC LIMIT 1",
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
    record = _append(db, row, DecisionKind.appeal, appellant, note, from_state=ItemState.decided)
    db.execute(
        "UPDATE items SET state = ?, claimed_by = NULL, lease_until = NULL WHERE id = ?",
        (ItemState.escalated, row["id"]),
    )
    return record


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
    if kind in FINAL_DECISIONS and row["model_label"] is not None:
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
    return record_from_row(
        db.execute("SELECT * FROM decisions WHERE id = ?", (cursor.lastrowid,)).fetchone()
    )


def decision_log(
    db: sqlite3.Connection,
    *,
    item_id: int | None,
    reviewer: str | None,
    after_id: int,
    limit: int,
) -> list[DecisionRecord]:
    """Decisions after ``after_id``, oldest first, optionally of one item or reviewer."""
    clauses = ["id > ?"]
    params: list[int | str] = [after_id]
    if item_id is not None:
        clauses.append("item_id = ?")
        params.append(item_id)
    if reviewer is not None:
        clauses.append("reviewer = ?")
        params.append(reviewer)
    rows = db.execute(
        f"SELECT * FROM decisions WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [record_from_row(row) for row in rows]


def standing_final_decisions(db: sqlite3.Connection) -> list[tuple[ReviewItem, DecisionRecord]]:
    """Decided items that still have their bytes, each with its latest ``allow`` or
    ``remove`` decision that was not undone."""
    rows = db.execute(
        "SELECT i.*, d.id AS decision_id FROM items i JOIN decisions d"
        " ON d.id = (SELECT MAX(id) FROM decisions WHERE item_id = i.id"
        "  AND decision IN (?, ?)"
        "  AND id NOT IN (SELECT undoes FROM decisions WHERE undoes IS NOT NULL))"
        " WHERE i.state = ? AND i.has_bytes = 1 ORDER BY i.id",
        (*FINAL_DECISIONS, ItemState.decided),
    ).fetchall()
    return [
        (
            item_from_row(row),
            record_from_row(
                db.execute("SELECT * FROM decisions WHERE id = ?", (row["decision_id"],)).fetchone()
            ),
        )
        for row in rows
    ]
