"""The queue's numbers: depth per state, decisions by kind, agreement with the
model, the oldest waiting item's age, and decisions per time bucket for charts."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from ._records import FINAL_DECISIONS, DecisionKind, ItemState

__all__ = ["queue_stats"]


def queue_stats(db: sqlite3.Connection, *, bucket_s: float) -> dict[str, Any]:
    now = time.time()
    depth = dict(db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
    by_kind = dict(
        db.execute("SELECT decision, COUNT(*) FROM decisions GROUP BY decision").fetchall()
    )
    # Agreement counts only final decisions that still stand (not undone).
    agreement = db.execute(
        "SELECT COUNT(*), SUM(overturned) FROM decisions WHERE decision IN (?, ?)"
        " AND id NOT IN (SELECT undoes FROM decisions WHERE undoes IS NOT NULL)",
        FINAL_DECISIONS,
    ).fetchone()
    oldest = db.execute(
        "SELECT MIN(created) FROM items WHERE state IN (?, ?)",
        (ItemState.pending, ItemState.escalated),
    ).fetchone()[0]
    timeline = db.execute(
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
        "timeline": [{"start": start, "decisions": counts} for start, counts in buckets.items()],
    }
