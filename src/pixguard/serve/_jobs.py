"""Generation jobs: a bounded queue and one worker per device."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._exceptions import PixguardError
from ._batcher import QueueFullError

__all__ = ["Job", "JobQueue"]

TERMINAL = frozenset({"done", "failed", "cancelled"})


class _CancelledError(Exception):
    pass


@dataclass
class Job:
    id: str
    params: dict[str, Any]
    status: str = "queued"
    step: int = 0
    steps: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, str] | None = None
    created: float = field(default_factory=time.time)
    owner: int | None = None  # the key that submitted it; None for the local operator
    version: int = 0  # bumped on every change, for event streams
    _paths: list[Path | None] = field(default_factory=list, repr=False)
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "step": self.step,
            "steps": self.steps,
            "results": self.results,
            "error": self.error,
            "created": self.created,
        }


class JobQueue:
    """Runs generation jobs one at a time on the device; every result has passed the gate."""

    def __init__(self, generator: Any, output_dir: Path, *, max_queued: int) -> None:
        self._generator = generator
        self._output_dir = output_dir
        self._queue: queue.Queue[Job | None] = queue.Queue(max_queued)
        self._jobs: dict[str, Job] = {}
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="pixguard-generate", daemon=True)
        self._thread.start()

    def submit(self, params: dict[str, Any], *, owner: int | None = None) -> Job:
        job = Job(uuid.uuid4().hex, params, owner=owner)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFullError("the generation queue is full") from None
        self._jobs[job.id] = job
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def image_path(self, job_id: str, position: int) -> Path | None:
        job = self._jobs.get(job_id)
        if job is None or not 0 <= position < len(job._paths):
            return None
        return job._paths[position]

    def cancel(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None and job.status not in TERMINAL:
            job.cancel.set()
            if job.status == "queued":
                self._update(job, status="cancelled")
        return job

    def wait_change(self, job: Job, seen_version: int, timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: job.version != seen_version, timeout=timeout)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _update(self, job: Job, **changes: Any) -> None:
        with self._changed:
            for key, value in changes.items():
                setattr(job, key, value)
            job.version += 1
            self._changed.notify_all()

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            if job.cancel.is_set():
                continue
            self._update(job, status="running")

            def on_step(done: int, total: int, job: Job = job) -> None:
                if job.cancel.is_set():
                    raise _CancelledError
                self._update(job, step=done, steps=total)

            try:
                results = self._generator(
                    **job.params, output_dir=self._output_dir / job.id, on_step=on_step
                )
            except _CancelledError:
                self._update(job, status="cancelled")
                continue
            except PixguardError as exc:
                self._update(job, status="failed", error=exc.to_dict())
                continue
            except Exception as exc:
                self._update(
                    job, status="failed", error={"code": "generation_failed", "message": str(exc)}
                )
                continue
            rows = []
            for position, result in enumerate(results):
                row = result.to_dict()
                row["image"] = f"/v1/jobs/{job.id}/images/{position}" if result.path else None
                rows.append(row)
            self._update(job, status="done", results=rows, _paths=[r.path for r in results])
