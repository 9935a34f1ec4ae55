"""Generation jobs: a bounded queue and one worker per device."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import shutil
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
    finished: float | None = None
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
    """Runs generation jobs one at a time on the device; every result has passed the gate.

    Finished jobs are kept for ``keep_s`` seconds, and at most ``keep_jobs`` of them;
    older ones are forgotten and their images deleted. Event streams wait for changes
    with :meth:`changed`, on the event loop, holding no thread.
    """

    def __init__(
        self,
        generator: Any,
        output_dir: Path,
        *,
        max_queued: int,
        keep_jobs: int = 100,
        keep_s: float = 3600.0,
    ) -> None:
        self._generator = generator
        self._output_dir = output_dir
        self._keep_jobs, self._keep_s = keep_jobs, keep_s
        self._queue: queue.Queue[Job | None] = queue.Queue(max_queued)
        self._jobs: dict[str, Job] = {}
        self._changed = threading.Condition()
        self._watchers: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._thread = threading.Thread(target=self._loop, name="pixguard-generate", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, params: dict[str, Any], *, owner: int | None = None) -> Job:
        self.evict()
        job = Job(uuid.uuid4().hex, params, owner=owner)
        with self._changed:
            self._jobs[job.id] = job
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._changed:
                del self._jobs[job.id]
            raise QueueFullError("the generation queue is full") from None
        return job

    def get(self, job_id: str) -> Job | None:
        self.evict()
        with self._changed:
            return self._jobs.get(job_id)

    def evict(self) -> list[str]:
        """Forget finished jobs past their age or beyond the count kept, deleting
        their images; returns their ids."""
        now = time.time()
        with self._changed:
            finished = sorted(
                (job for job in self._jobs.values() if job.finished is not None),
                key=lambda job: job.finished or 0.0,
            )
            surplus = max(0, len(finished) - self._keep_jobs)
            expired = [
                job
                for position, job in enumerate(finished)
                if position < surplus or now - (job.finished or now) > self._keep_s
            ]
            for job in expired:
                del self._jobs[job.id]
        for job in expired:
            shutil.rmtree(self._output_dir / job.id, ignore_errors=True)
        return [job.id for job in expired]

    async def changed(self, job: Job, seen_version: int, timeout: float) -> None:
        """Return when ``job`` has changed since ``seen_version``, or after ``timeout``."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        watcher = (loop, event)
        with self._changed:
            if job.version != seen_version:
                return
            self._watchers.setdefault(job.id, set()).add(watcher)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._changed:
                waiting = self._watchers.get(job.id)
                if waiting is not None:
                    waiting.discard(watcher)
                    if not waiting:
                        del self._watchers[job.id]

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

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _update(self, job: Job, **changes: Any) -> None:
        with self._changed:
            for key, value in changes.items():
                setattr(job, key, value)
            if job.status in TERMINAL and job.finished is None:
                job.finished = time.time()
            job.version += 1
            self._changed.notify_all()
            for loop, event in self._watchers.get(job.id, ()):
                # A closed loop has nobody waiting any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(event.set)

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
            self.evict()
