"""The service's worker threads: the micro-batcher and the generation job queue."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from pixguard import Classifier
from pixguard.serve import MicroBatcher, QueueFullError
from pixguard.serve._jobs import TERMINAL, JobQueue


@pytest.fixture(scope="module")
def classifier(tiny_vit_folder):
    model = Classifier.load(tiny_vit_folder, runtime="torch")
    yield model
    model.close()


def _prepared(classifier, seed: int = 0):
    from tests.helpers import encode, gradient_image

    return classifier.prepare(encode(gradient_image(40, 40, seed=seed), "PNG"))


def test_the_batcher_survives_a_failed_batch(classifier):
    calls = []

    def on_batch(size: int, seconds: float) -> None:
        calls.append(size)
        if len(calls) == 1:
            raise RuntimeError("metrics backend down")

    batcher = MicroBatcher(classifier, max_batch=4, max_wait_s=0.0, queue_size=8, on_batch=on_batch)
    try:
        first = batcher.submit(_prepared(classifier))
        with pytest.raises(RuntimeError, match="metrics backend down"):
            first.result(timeout=30)
        second = batcher.submit(_prepared(classifier, 1))
        assert second.result(timeout=30).nsfw_score is not None
        assert batcher.alive
    finally:
        batcher.close()
    assert not batcher.alive


def test_a_submit_interrupted_by_close_is_still_resolved(classifier):
    """Deterministic form of the race: close() runs while a submit is between its
    check and its put."""
    batcher = MicroBatcher(classifier, max_batch=4, max_wait_s=0.0, queue_size=8)
    real_put = batcher._queue.put_nowait
    closer = threading.Thread(target=batcher.close)

    def put_during_close(entry) -> None:
        closer.start()
        closer.join(timeout=1.0)  # close finishes here unless it waits for the submit
        real_put(entry)

    batcher._queue.put_nowait = put_during_close
    try:
        future = batcher.submit(_prepared(classifier))
    except QueueFullError:
        future = None
    closer.join(timeout=30)
    if future is not None:
        assert future.result(timeout=30).nsfw_score is not None


def test_admission_is_bounded_and_released(classifier):
    batcher = MicroBatcher(classifier, max_batch=4, max_wait_s=0.0, queue_size=3)
    try:
        with batcher.admit(2):
            with pytest.raises(QueueFullError), batcher.admit(2):
                pass
            with batcher.admit(1):
                pass
        with batcher.admit(3):
            pass
    finally:
        batcher.close()
    with pytest.raises(QueueFullError), batcher.admit(1):
        pass


class _WritingGenerator:
    """Stands in for a Generator at JobQueue's interface (a callable writing images)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release.set()

    def __call__(self, *, output_dir: Path, on_step, **params):
        self.release.wait()
        on_step(1, 1)
        output_dir.mkdir(parents=True, exist_ok=True)
        path = output_dir / "0.png"
        path.write_bytes(b"png")

        class Result:
            def to_dict(self):
                return {"seed": 0}

        result = Result()
        result.path = path
        return [result]


def _finish(queue: JobQueue, job_id: str) -> None:
    deadline = time.monotonic() + 30
    while (job := queue.get(job_id)) is not None and job.status not in TERMINAL:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_finished_jobs_are_evicted_by_count_with_their_images(tmp_path):
    queue = JobQueue(_WritingGenerator(), tmp_path, max_queued=8, keep_jobs=2, keep_s=3600)
    try:
        ids = []
        for _ in range(4):
            job = queue.submit({"prompt": "x"})
            _finish(queue, job.id)
            ids.append(job.id)
        assert [queue.get(i) is not None for i in ids] == [False, False, True, True]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(ids[2:])
    finally:
        queue.close()


def test_finished_jobs_are_evicted_by_age(tmp_path):
    queue = JobQueue(_WritingGenerator(), tmp_path, max_queued=8, keep_jobs=100, keep_s=0.2)
    try:
        job = queue.submit({"prompt": "x"})
        _finish(queue, job.id)
        assert queue.get(job.id) is not None
        assert (tmp_path / job.id).is_dir()
        time.sleep(0.3)
        assert queue.get(job.id) is None
        assert not (tmp_path / job.id).exists()
    finally:
        queue.close()


def test_event_waits_hold_no_thread(tmp_path):
    generator = _WritingGenerator()
    generator.release.clear()
    queue = JobQueue(generator, tmp_path, max_queued=8)

    async def main() -> list[int]:
        job = queue.submit({"prompt": "x"})
        loop = asyncio.get_running_loop()
        threads_before = threading.active_count()
        waiters = [asyncio.create_task(queue.changed(job, job.version, 30)) for _ in range(50)]
        await asyncio.sleep(0.2)
        threads_waiting = threading.active_count()
        started = loop.time()
        generator.release.set()  # the job runs: every waiter wakes
        await asyncio.wait_for(asyncio.gather(*waiters), 10)
        return [threads_before, threads_waiting, round(loop.time() - started)]

    try:
        before, waiting, seconds = asyncio.run(main())
    finally:
        generator.release.set()
        queue.close()
    assert waiting == before  # 50 waiting streams, no thread among them
    assert seconds < 10
