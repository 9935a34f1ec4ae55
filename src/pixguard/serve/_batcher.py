"""Dynamic micro-batching: concurrent requests share forward passes."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from ..classify import Classifier, Prediction, PreparedInput

__all__ = ["MicroBatcher", "QueueFullError"]


class QueueFullError(Exception):
    """The bounded queue is full: the caller answers 429."""


class MicroBatcher:
    """One inference thread takes up to ``max_batch`` queued inputs, waiting at most
    ``max_wait_s`` for a batch to fill, and runs them in one forward pass.

    The queue is bounded: when it is full, :meth:`submit` refuses at once instead of
    letting memory grow.
    """

    def __init__(
        self,
        classifier: Classifier,
        *,
        max_batch: int,
        max_wait_s: float,
        queue_size: int,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._classifier = classifier
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._queue: queue.Queue[tuple[PreparedInput, Future[Prediction]] | None] = queue.Queue(
            queue_size
        )
        self._on_batch = on_batch
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="pixguard-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def submit(self, item: PreparedInput) -> Future[Prediction]:
        if self._closed:
            raise QueueFullError("the service is shutting down")
        future: Future[Prediction] = Future()
        try:
            self._queue.put_nowait((item, future))
        except queue.Full:
            raise QueueFullError("the inference queue is full") from None
        return future

    def close(self) -> None:
        """Stop accepting, finish everything queued, then stop the thread."""
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            # Wait for a batch to fill only while requests are arriving: a lone
            # request (an idle service) runs at once, with no added latency.
            deadline = time.monotonic() + (self._max_wait_s if not self._queue.empty() else 0.0)
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._run(batch)
        # Drain what is left after the stop marker (requests already accepted).
        leftovers = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                leftovers.append(item)
        for start in range(0, len(leftovers), self._max_batch):
            self._run(leftovers[start : start + self._max_batch])

    def _run(self, batch: list[tuple[PreparedInput, Future[Prediction]]]) -> None:
        live = [(item, future) for item, future in batch if future.set_running_or_notify_cancel()]
        if not live:
            return
        started = time.perf_counter()
        try:
            predictions = self._classifier.predict_prepared(
                [item for item, _ in live], batch_size=self._max_batch
            )
        except Exception as exc:
            for _, future in live:
                future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(len(live), time.perf_counter() - started)
        for (_, future), prediction in zip(live, predictions, strict=True):
            future.set_result(prediction)
