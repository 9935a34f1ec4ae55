"""Video moderation: sampled frames through the Classifier's own batching."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._exceptions import ImageError, PixguardError
from ..images import VideoInput, VideoLimits, VideoReader, VideoSampling, preprocess
from ._prediction import Prediction

if TYPE_CHECKING:
    from ._classifier import Classifier

__all__ = ["Segment", "VideoPrediction", "predict_video"]


@dataclass(frozen=True)
class Segment:
    """A stretch of video and the scores of the frame sampled at its start
    (``probabilities`` stay out of the JSON timeline, which stays compact)."""

    start: float
    end: float
    nsfw_score: float
    probabilities: Mapping[str, float] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, float]:
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "nsfw_score": self.nsfw_score,
        }


@dataclass(frozen=True)
class VideoPrediction(Prediction):
    """A :class:`Prediction` for a video: ``nsfw_score`` is the highest over the
    sampled frames, ``frame`` its index in the stream and ``timestamp`` its time.

    Attributes:
        timestamp: seconds from the start to the highest-scoring frame.
        timeline: one :class:`Segment` per sampled frame, in time order.
        duration: the video's duration in seconds.
        stopped_early: decoding stopped at a frame at or above ``stop_at``.
    """

    timestamp: float | None = None
    timeline: tuple[Segment, ...] = ()
    duration: float | None = None
    stopped_early: bool = False

    def to_dict(self, *, include_embedding: bool = False) -> dict[str, Any]:
        data = super().to_dict(include_embedding=include_embedding)
        data.update(
            kind="video",
            timestamp=self.timestamp,
            timeline=[segment.to_dict() for segment in self.timeline],
            duration=self.duration,
            stopped_early=self.stopped_early,
        )
        return data


def _timeline(
    times: list[float], scores: list[float], probabilities: list[dict[str, float]], end: float
) -> tuple[Segment, ...]:
    ends = [*times[1:], max(end, times[-1])]
    return tuple(
        Segment(start, stop, score, p)
        for start, stop, score, p in zip(times, ends, scores, probabilities, strict=True)
    )


def predict_video(
    classifier: Classifier,
    source: VideoInput,
    *,
    sampling: VideoSampling | None,
    limits: VideoLimits | None,
    stop_at: float | None,
    batch_size: int,
) -> VideoPrediction:
    """See :meth:`Classifier.predict_video`."""
    base: dict[str, Any] = {
        "model": classifier.name,
        "threshold": classifier.threshold,
        "runtime": classifier.runtime_name,
    }
    try:
        reader = VideoReader(source, limits=limits)
    except ImageError as exc:
        return VideoPrediction(source=str(exc.source or source), error=exc, **base)
    pp = classifier.spec.preprocessing
    # With an early exit, each frame is classified as soon as it is decoded, so
    # nothing past the first frame at or above ``stop_at`` is decoded.
    rows_per_run = 1 if stop_at is not None else batch_size
    times: list[float] = []
    scores: list[float] = []
    indices: list[int] = []
    frame_probabilities: list[dict[str, float]] = []
    label_names = classifier.spec.label_names
    best: tuple[float, np.ndarray, int] | None = None  # score, embedding, sample
    pending: list[tuple[np.ndarray, float, int]] = []
    stopped = False

    def run_pending() -> PixguardError | None:
        nonlocal best, stopped
        probabilities, embeddings, failure = classifier._run_rows(
            [row for row, _, _ in pending], batch_size
        )
        if failure is not None:
            return failure
        nsfw = classifier.nsfw_scores(probabilities)
        for k, (_, timestamp, index) in enumerate(pending):
            score = float(nsfw[k])
            times.append(timestamp)
            scores.append(score)
            indices.append(index)
            frame_probabilities.append(
                {name: float(p) for name, p in zip(label_names, probabilities[k], strict=True)}
            )
            if best is None or score > best[0]:
                best = (score, embeddings[k].copy(), len(scores) - 1)
            if stop_at is not None and score >= stop_at:
                stopped = True
        pending.clear()
        return None

    with reader:
        try:
            for frame in reader.sample(sampling):
                pending.append((preprocess(frame.image, pp), frame.timestamp, frame.index))
                if len(pending) >= rows_per_run:
                    failure = run_pending()
                    if failure is not None:
                        return VideoPrediction(source=reader.name, error=failure, **base)
                    if stopped:
                        break
            if pending and (failure := run_pending()) is not None:
                return VideoPrediction(source=reader.name, error=failure, **base)
        except ImageError as exc:
            return VideoPrediction(source=reader.name, error=exc, **base)
        duration = reader.duration
        decoded = reader.frames_decoded
    assert best is not None  # the reader raises EmptyVideoError when nothing was sampled
    score, embedding, position = best
    return VideoPrediction(
        source=reader.name,
        label="nsfw" if score >= classifier.threshold else "sfw",
        nsfw_score=score,
        probabilities=frame_probabilities[position],
        embedding=embedding,
        frame=indices[position],
        frames_classified=len(scores),
        frame_count=decoded,
        timestamp=times[position],
        timeline=_timeline(times, scores, frame_probabilities, duration),
        duration=duration,
        stopped_early=stopped,
        **base,
    )
