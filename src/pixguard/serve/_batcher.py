"""Dynamic micro-batching: concurrent requests share forward passes."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager

from ..classify import Classifier, Prediction, PreparedInput

__all__ = ["MicroBatcher", "QueueFullError"]

logger = logging.getLogger("pixguard.serve")


class QueueFullError(Exception):
    """The bounded queue is full: the caller answers 429."""


class MicroBatcher:
    """One inference thread takes up to ``max_batch`` queued inputs, waiting at most
    ``max_wait_s`` for a batch to fill, and runs them in one forward pass.

    The queue is bounded: when it is full, :meth:`submit` refuses at once instead of
    letting memory grow. :meth:`admit` reserves room before a request decodes
    anything, so a full service answers 429 without doing the expensive work.

    A batch that fails (in the model or anywhere after it) fails only its own
    requests; the thread goes on with the next batch. :attr:`alive` says whether
    the thread still runs.
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
        self._queue_size = queue_size
        self._admitted = 0
        self._closed = False
        # Guards _closed and _admitted: a submit racing close either lands before the
        # stop marker (and is run) or is refused; it is never left unresolved.
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="pixguard-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    @contextmanager
    def admit(self, count: int) -> Iterator[None]:
        """Reserve room for ``count`` inputs for the block's duration, or raise
        :class:`QueueFullError` at once when the reserved and queued inputs would
        exceed the queue size."""
        with self._lock:
            if self._closed:
                raise QueueFullError("the service is shutting down")
            if self._admitted + count > self._queue_size:
                raise QueueFullError("the inference queue is full")
            self._admitted += count
        try:
            yield
        finally:
            with self._lock:
                self._admitted -= count

    def submit(self, item: PreparedInput) -> Future[Prediction]:
        future: Future[Prediction] = Future()
        with self._lock:
            if self._closed:
                raise QueueFullError("the service is shutting down")
            try:
                self._queue.put_nowait((item, future))
            except queue.Full:
                raise QueueFullError("the inference queue is full") from None
        return future

    def close(self) -> None:
        """Stop accepting, finish everything queued, then stop the thread."""
        with self._lock:
            if self._closed:
                return
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
            results = list(zip(live, predictions, strict=True))
            if self._on_batch is not None:
                self._on_batch(len(live), time.perf_counter() - started)
        except Exception as exc:
            logger.exception("a batch of %d failed; the batcher goes on", len(live))
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), prediction in results:
            future.set_result(prediction)
