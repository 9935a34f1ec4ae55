"""The audit log's group commit: requests waiting at the same time share one
transaction, each is answered only once its rows are committed, and a bad row fails
only its own request."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from pixguard.serve import AuditLog


class _HeldFirstCommit:
    """Wraps ``AuditLog.record``: holds the first commit until released, and notes
    each group's request ids and which requests are committed."""

    def __init__(self, audit: AuditLog) -> None:
        self.groups: list[list[str]] = []
        self.committed: set[str] = set()
        self.started = threading.Event()
        self.release = threading.Event()
        self._record = audit.record
        audit.record = self  # type: ignore[method-assign]

    def __call__(self, rows: list[dict]) -> None:
        ids = [row["request_id"] for row in rows]
        self.groups.append(ids)
        if len(self.groups) == 1:
            self.started.set()
            assert self.release.wait(30)
        self._record(rows)
        self.committed.update(ids)


async def _append_while_the_first_commit_is_held(
    audit: AuditLog, held: _HeldFirstCommit, rows: list[dict]
) -> tuple[list[object], list[tuple[str, bool]]]:
    answered: list[tuple[str, bool]] = []

    def note(task: asyncio.Task, request_id: str) -> None:
        answered.append((request_id, request_id in held.committed))

    first = asyncio.create_task(audit.append([{"request_id": "r0", "label": "sfw"}]))
    first.add_done_callback(lambda task: note(task, "r0"))
    assert await asyncio.to_thread(held.started.wait, 30)
    tasks = [first]
    for row in rows:
        task = asyncio.create_task(audit.append([row]))
        task.add_done_callback(lambda task, rid=row["request_id"]: note(task, rid))
        tasks.append(task)
    await asyncio.sleep(0.05)  # every request is now waiting for its commit
    assert not any(task.done() for task in tasks)
    held.release.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    return outcomes, answered


def test_waiting_requests_share_one_commit_and_are_answered_after_it(tmp_path):
    audit = AuditLog(tmp_path / "audit.db")
    held = _HeldFirstCommit(audit)
    rows = [{"request_id": f"r{i}", "label": "sfw"} for i in range(1, 6)]
    try:
        outcomes, answered = asyncio.run(_append_while_the_first_commit_is_held(audit, held, rows))
        assert outcomes == [None] * 6
        assert held.groups == [["r0"], ["r1", "r2", "r3", "r4", "r5"]]
        assert sorted(answered) == [(f"r{i}", True) for i in range(6)]  # all after commit
        assert [row["request_id"] for row in audit.query()] == [f"r{i}" for i in range(6)]
    finally:
        audit.close()


def test_a_bad_row_fails_only_its_own_request(tmp_path):
    audit = AuditLog(tmp_path / "audit.db")
    held = _HeldFirstCommit(audit)
    rows = [
        {"request_id": "good1", "label": "sfw"},
        {"request_id": "bad", "label": object()},  # cannot be bound
        {"request_id": "good2", "label": "nsfw"},
    ]
    try:
        outcomes, _ = asyncio.run(_append_while_the_first_commit_is_held(audit, held, rows))
        assert outcomes[0] is None and outcomes[1] is None and outcomes[3] is None
        assert isinstance(outcomes[2], sqlite3.Error)
        assert [row["request_id"] for row in audit.query()] == ["r0", "good1", "good2"]
    finally:
        audit.close()


def test_close_commits_what_is_waiting_and_refuses_more(tmp_path):
    audit = AuditLog(tmp_path / "audit.db")
    held = _HeldFirstCommit(audit)

    async def scenario() -> None:
        first = asyncio.create_task(audit.append([{"request_id": "r0", "label": "sfw"}]))
        assert await asyncio.to_thread(held.started.wait, 30)
        second = asyncio.create_task(audit.append([{"request_id": "r1", "label": "sfw"}]))
        await asyncio.sleep(0.05)
        closing = asyncio.create_task(asyncio.to_thread(audit.close))
        await asyncio.sleep(0.05)
        held.release.set()
        await asyncio.gather(first, second, closing)
        with pytest.raises(RuntimeError, match="closed"):
            await audit.append([{"request_id": "late"}])

    asyncio.run(scenario())
    assert held.committed == {"r0", "r1"}
