"""The micro-batcher, driven deterministically: requests that queue up while a
forward pass runs share the next one. No timing is measured."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from pixguard import Classifier
from pixguard.serve._batcher import MicroBatcher


@pytest.fixture(scope="module")
def classifier(tiny_vit_folder) -> Classifier:
    return Classifier.load(tiny_vit_folder, runtime="torch")


def test_requests_queued_during_a_forward_pass_share_the_next_one(classifier):
    entered, release = threading.Event(), threading.Event()
    original = classifier.runtime.run
    calls = []

    def first_call_waits(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            entered.set()
            assert release.wait(60), "the test never released the first batch"
        return original(batch)

    classifier.runtime.run = first_call_waits
    sizes = []
    batcher = MicroBatcher(
        classifier,
        max_batch=8,
        max_wait_s=0.005,
        queue_size=32,
        on_batch=lambda size, _seconds: sizes.append(size),
    )
    try:
        images = [np.full((32, 32, 3), 10 * i, np.uint8) for i in range(13)]
        first = batcher.submit(classifier.prepare(images[0]))
        assert entered.wait(60)  # the inference thread is inside a forward pass
        rest = [batcher.submit(classifier.prepare(image)) for image in images[1:]]
        release.set()
        results = [first.result(60)] + [future.result(60) for future in rest]
    finally:
        batcher.close()
        classifier.runtime.run = original
    assert sizes == [1, 8, 4]  # 12 queued requests: full batches of 8, then the rest
    assert all(result.ok for result in results)
    expected = classifier.predict(images)
    for got, want in zip(results, expected, strict=True):
        assert got.nsfw_score == pytest.approx(want.nsfw_score, abs=1e-5)
