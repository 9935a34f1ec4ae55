"""The review queue: items a policy routed to people, claims under leases, and an
append-only log of the people's decisions.

Everything lives in the data dir: ``review.db`` (SQLite, WAL) and the queued images'
bytes under ``review-images/``, one private file per sha256. Several processes (the
service's workers, the CLI) may share one queue: every state change is one
``BEGIN IMMEDIATE`` transaction, so two reviewers can never claim the same item.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .._exceptions import ReviewConflictError, ReviewInvalidError, ReviewItemNotFoundError
from .._sqlite import connect, transaction
from ..classify import Prediction
from ..policy import Action, Decision
from ._blobs import Blobs
from ._decisions import (
    appeal_in,
    check_reviewer,
    decide_in,
    decision_log,
    reviewer_decision,
    standing_final_decisions,
    undo_in,
)
from ._items import claim_in, enqueue_in, expire_in, release_in
from ._records import (
    SCHEMA,
    DecisionKind,
    DecisionRecord,
    ItemState,
    ReviewItem,
    item_from_row,
    item_row,
)
from ._stats import queue_stats

__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_RETENTION_S",
    "MAX_BULK",
    "MAX_CLAIM",
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
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._blobs = Blobs(self.data_dir / "review-images")
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
            return enqueue_in(
                db,
                data,
                prediction,
                decision,
                sha256=digest,
                source=source if source is not None else prediction.source,
                key_id=key_id,
                bank_match=bank_match,
                created=now,
            )

    # --- claims ---------------------------------------------------------------------

    def claim(
        self, reviewer: str, *, limit: int = 1, queue: ItemState = ItemState.pending
    ) -> list[ReviewItem]:
        """Claim up to ``limit`` items, oldest first, under a lease of ``lease_s``.

        Items this reviewer already holds come first (a reloaded page gets its own
        items back); then unclaimed items, and items whose lease ran out. An item the
        reviewer skipped is not offered to them again.
        """
        check_reviewer(reviewer)
        if not 1 <= limit <= MAX_CLAIM:
            raise ReviewInvalidError(f"limit must be between 1 and {MAX_CLAIM}, not {limit}")
        if queue not in (ItemState.pending, ItemState.escalated):
            raise ReviewInvalidError(f"there is no {queue!r} queue to claim from")
        self._maybe_purge()
        now = time.time()
        with transaction(self._db, self._lock) as db:
            return claim_in(
                db, reviewer, queue=queue, limit=limit, now=now, lease_until=now + self.lease_s
            )

    def release(self, item_id: int, reviewer: str) -> None:
        """Give a claimed item back to the queue before its lease ends."""
        with transaction(self._db, self._lock) as db:
            release_in(db, item_id, reviewer)

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
        kind = reviewer_decision(decision)
        check_reviewer(reviewer)
        keep_bytes = self.keep_for_training if keep is None else keep
        with transaction(self._db, self._lock) as db:
            record, drop = decide_in(
                db, item_id, reviewer, kind, note, admin=admin, keep_bytes=keep_bytes
            )
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
        check_reviewer(reviewer)
        entries = list(decisions)
        if not 1 <= len(entries) <= MAX_BULK:
            raise ReviewInvalidError(f"a bulk decision holds 1 to {MAX_BULK} items")
        parsed = [(item_id, reviewer_decision(kind), note) for item_id, kind, note in entries]
        results: list[DecisionRecord | ReviewConflictError | ReviewItemNotFoundError] = []
        dropped: list[str] = []
        with transaction(self._db, self._lock) as db:
            for item_id, kind, note in parsed:
                try:
                    record, drop = decide_in(
                        db,
                        item_id,
                        reviewer,
                        kind,
                        note,
                        admin=admin,
                        keep_bytes=self.keep_for_training,
                    )
                except (ReviewConflictError, ReviewItemNotFoundError) as exc:
                    results.append(exc)
                    continue
                results.append(record)
                if drop is not None:
                    dropped.append(drop)
        for digest in dropped:
            self._drop_bytes(digest)
        return results

    def undo(self, decision_id: int, reviewer: str, *, admin: bool = False) -> DecisionRecord:
        """Take back a decision by appending an ``undo``: the item returns to the queue
        it was in, claimed by ``reviewer``, so it can be decided again.

        Only the latest decision on an item can be undone, by its reviewer or an admin.
        """
        check_reviewer(reviewer)
        with transaction(self._db, self._lock) as db:
            return undo_in(db, decision_id, reviewer, admin=admin, lease_s=self.lease_s)

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
        check_reviewer(appellant)
        with transaction(self._db, self._lock) as db:
            return appeal_in(
                db,
                sha256=sha256,
                decision_id=decision_id,
                appellant=appellant,
                note=note,
                key_id=key_id,
            )

    # --- reading --------------------------------------------------------------------

    def item(self, item_id: int) -> ReviewItem:
        with self._lock:
            return item_from_row(item_row(self._db, item_id))

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
        with self._lock:
            return decision_log(
                self._db, item_id=item_id, reviewer=reviewer, after_id=after_id, limit=limit
            )

    def stats(self, *, bucket_s: float = _SECONDS_PER_DAY) -> dict[str, Any]:
        """Queue depth, decisions by kind, agreement with the model, the oldest item's
        age, and decisions by kind per ``bucket_s`` (for charts)."""
        with self._lock:
            return queue_stats(self._db, bucket_s=bucket_s)

    # --- retention and export -------------------------------------------------------

    def purge(self, *, now: float | None = None) -> int:
        """Delete the bytes of items older than the retention limit; undecided ones
        become ``expired``. Returns how many items lost their bytes."""
        cutoff = (time.time() if now is None else now) - self.retention_s
        with transaction(self._db, self._lock) as db:
            expired = expire_in(db, cutoff)
        for digest in set(expired):
            self._drop_bytes(digest)
        return len(expired)

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
            standing = standing_final_decisions(self._db)
        yield from standing

    def read_bytes(self, item: ReviewItem) -> bytes | None:
        return self._blobs.get(item.sha256) if item.has_bytes else None
