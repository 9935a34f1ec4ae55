"""Classifier: images in, predictions with probabilities and embeddings out."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .._exceptions import (
    ImageDecodeError,
    ImageError,
    InferenceError,
    InvalidThresholdError,
    PixguardError,
)
from ..images import (
    DecodedImage,
    DecodeLimits,
    ImageInput,
    VideoInput,
    VideoLimits,
    VideoSampling,
    describe_source,
    load_image,
    preprocess,
)
from ..models import resolve_model
from ..runtimes import HeatmapMethod, ParityReport, Runtime, load_runtime, open_heatmap_method
from ._explain import Explanation, explain_images
from ._prediction import Prediction
from ._redact import DEFAULT_BLUR_STRENGTH, DEFAULT_HEAT_THRESHOLD, Redaction, redact_images
from ._video import VideoPrediction, predict_video

__all__ = ["DEFAULT_BATCH_SIZE", "Classifier", "PreparedInput"]

DEFAULT_BATCH_SIZE = 16


def _check_threshold(threshold: float) -> float:
    if not isinstance(threshold, int | float) or not 0.0 <= float(threshold) <= 1.0:
        raise InvalidThresholdError(f"threshold must be a number in [0, 1], got {threshold!r}")
    return float(threshold)


@dataclass
class PreparedInput:
    """A decoded input, reduced to model inputs and frame metadata (the decoded
    frames themselves are dropped as soon as they are preprocessed)."""

    source: str
    inputs: list[np.ndarray] | None = None
    frame_indices: tuple[int, ...] = ()
    frame_count: int = 0
    error: PixguardError | None = None


class Classifier:
    """A loaded moderation model with its threshold and decoding limits.

    Create it with :meth:`load`; it is safe to reuse for many calls and keeps the
    model warm. ``predict`` never raises for a bad input: that input's
    :class:`Prediction` carries the error instead.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        threshold: float | None = None,
        limits: DecodeLimits | None = None,
        workers: int | None = None,
        parity: ParityReport | None = None,
    ) -> None:
        self.runtime = runtime
        self.parity = parity
        self.spec = runtime.spec
        self.threshold = _check_threshold(self.spec.threshold if threshold is None else threshold)
        self.limits = limits or DecodeLimits()
        self._workers = workers or max(1, min(8, os.cpu_count() or 1))
        self._pool: ThreadPoolExecutor | None = None
        self._nsfw_indices = list(self.spec.nsfw_indices)
        self._heatmap_method: HeatmapMethod | None = None
        # Grad-CAM hooks the explanation model: one explanation at a time.
        self.explain_lock = threading.Lock()
        self._embedding_dim: int | None = None

    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike[str] | None = None,
        *,
        threshold: float | None = None,
        limits: DecodeLimits | None = None,
        workers: int | None = None,
        runtime: str = "auto",
        precision: str | None = None,
        trust_torchscript: bool = False,
    ) -> Classifier:
        """Load a registered model by name, a model folder, or ``hf-hub:owner/repo``.

        ``None`` loads the default model (``marqo-nsfw-384``). ``threshold``
        overrides the model's own default. ``runtime`` is ``torch``,
        ``onnxruntime``, ``openvino`` or ``auto`` (the fastest path here that passes
        the parity gate); ``precision`` is ``fp32``, ``bf16`` or ``int8``.
        ``trust_torchscript`` allows a TorchScript folder that pixguard did not
        export on this machine: TorchScript is code, load it only from a trusted source.
        """
        if threshold is not None:
            _check_threshold(threshold)
        loaded = load_runtime(
            resolve_model(name_or_path),
            runtime=runtime,
            precision=precision,
            threshold=threshold,
            trust_torchscript=trust_torchscript,
        )
        return cls(
            loaded.runtime,
            threshold=threshold,
            limits=limits,
            workers=workers,
            parity=loaded.parity,
        )

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def embedding_dim(self) -> int:
        """Size of the embedding. Model folders may not record it (``num_features``
        is optional), so it is then measured once with one forward pass."""
        if self._embedding_dim is None:
            self._embedding_dim = self.spec.embedding_dim or self._measure_embedding_dim()
        return self._embedding_dim

    def _measure_embedding_dim(self) -> int:
        pp = self.spec.preprocessing
        probe = preprocess(Image.new("RGB", pp.resize_size), pp)
        try:
            output = self.runtime.run(probe[None])
        except Exception as exc:
            raise InferenceError(
                f"the model failed on a probe image: {exc}", source=self.name
            ) from exc
        return int(output.embeddings.shape[1])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def classify(self, image: ImageInput) -> Prediction:
        """Classify one image; raise its :class:`ImageError` if it cannot be used."""
        return self.predict([image])[0].raise_for_error()

    def predict(
        self,
        images: Iterable[ImageInput],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_result: Callable[[Prediction], None] | None = None,
    ) -> list[Prediction]:
        """Classify ``images``; results keep input order, one per input."""
        return list(self.iter_predict(images, batch_size=batch_size, on_result=on_result))

    def iter_predict(
        self,
        images: Iterable[ImageInput],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_result: Callable[[Prediction], None] | None = None,
    ) -> Iterator[Prediction]:
        """Stream predictions in input order.

        Decoding of the next batch runs in worker threads while the model works on
        the current one, so large photos do not leave the model idle. At most two
        batches are in flight: memory stays bounded on any number of inputs.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        iterator = iter(images)
        ahead = self._decode_async(list(itertools.islice(iterator, batch_size)))
        while ahead:
            current = ahead
            ahead = self._decode_async(list(itertools.islice(iterator, batch_size)))
            prepared = [future.result() for future in current]
            for prediction in self.predict_prepared(prepared, batch_size=batch_size):
                if on_result is not None:
                    on_result(prediction)
                yield prediction

    def prepare(self, source: ImageInput) -> PreparedInput:
        """Decode and preprocess one input (never raises for a bad image: the error is
        kept). With :meth:`predict_prepared`, lets a service decode in parallel and
        batch inference across requests."""
        return self.prepare_keeping_frames(source)[0]

    def prepare_keeping_frames(
        self, source: ImageInput, *, limits: DecodeLimits | None = None
    ) -> tuple[PreparedInput, DecodedImage | None]:
        """:meth:`prepare`, also returning the decoded frames (None for a bad input)."""
        name = describe_source(source)
        pp = self.spec.preprocessing
        try:
            decoded = load_image(source, limits=limits or self.limits, min_size=pp.resize_size)
            inputs = [preprocess(frame, pp) for frame in decoded.frames]
        except ImageError as exc:
            return PreparedInput(name, error=exc), None
        except Exception as exc:
            error = ImageDecodeError(f"preprocessing failed: {exc}", source=name)
            return PreparedInput(name, error=error), None
        prepared = PreparedInput(
            name,
            inputs=inputs,
            frame_indices=decoded.frame_indices,
            frame_count=decoded.frame_count,
        )
        return prepared, decoded

    def heatmap_method(self) -> HeatmapMethod:
        """The explanation method for this model, prepared on first use (an eager
        fp32 torch copy for Grad-CAM, whatever runtime classifies)."""
        if self._heatmap_method is None:
            self._heatmap_method = open_heatmap_method(self.runtime)
        return self._heatmap_method

    def explain(
        self, images: Iterable[ImageInput], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> list[Explanation]:
        """Classify ``images`` and give a heatmap of where each NSFW score comes from.

        Never raises for a bad input: its :class:`Explanation` carries the error
        (of the input in ``prediction.error``, of the heatmap in ``error``).
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        results: list[Explanation] = []
        iterator = iter(images)
        while chunk := list(itertools.islice(iterator, batch_size)):
            results.extend(explain_images(self, chunk, batch_size=batch_size))
        return results

    def _decode_async(self, items: list[ImageInput]) -> list[Future[PreparedInput]]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="pixguard-decode")
        return [self._pool.submit(self.prepare, item) for item in items]

    def predict_prepared(
        self, prepared: list[PreparedInput], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> list[Prediction]:
        """One forward pass (per ``batch_size`` rows) over inputs from :meth:`prepare`."""
        rows = [array for item in prepared if item.inputs for array in item.inputs]
        probabilities, embeddings, failure = self._run_rows(rows, batch_size)
        results: list[Prediction] = []
        row = 0
        for item in prepared:
            if item.error is not None or item.inputs is None:
                results.append(self._failed(item.source, item.error))
                continue
            count = len(item.inputs)
            if failure is not None:
                results.append(self._failed(item.source, failure))
            else:
                results.append(
                    self._decide(
                        item,
                        probabilities[row : row + count],
                        embeddings[row : row + count],
                    )
                )
            row += count
        return results

    def _run_rows(
        self, rows: list[np.ndarray], batch_size: int
    ) -> tuple[np.ndarray, np.ndarray, PixguardError | None]:
        if not rows:
            return np.empty((0, 0)), np.empty((0, 0)), None
        probabilities, embeddings = [], []
        try:
            for start in range(0, len(rows), batch_size):
                output = self.runtime.run(np.stack(rows[start : start + batch_size]))
                probabilities.append(output.probabilities)
                embeddings.append(output.embeddings)
        except Exception as exc:
            error = InferenceError(f"the model failed on this batch: {exc}", source=self.name)
            return np.empty((0, 0)), np.empty((0, 0)), error
        return np.concatenate(probabilities), np.concatenate(embeddings), None

    def predict_video(
        self,
        source: VideoInput,
        *,
        sampling: VideoSampling | None = None,
        limits: VideoLimits | None = None,
        stop_at: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> VideoPrediction:
        """Classify a video (MP4/MOV, WebM/MKV) from frames sampled at
        ``sampling.fps`` plus scene changes, through the same batching as images.

        The result holds the highest score and its ``timestamp``, a per-segment
        ``timeline``, ``frames_classified`` and ``duration``. With ``stop_at``,
        decoding stops at the first frame scoring at or above it. Never raises
        for a bad file: the prediction carries its :class:`VideoError`.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if stop_at is not None:
            _check_threshold(stop_at)
        return predict_video(
            self, source, sampling=sampling, limits=limits, stop_at=stop_at, batch_size=batch_size
        )

    def redact(
        self,
        images: Iterable[ImageInput],
        *,
        strength: float = DEFAULT_BLUR_STRENGTH,
        heat_threshold: float = DEFAULT_HEAT_THRESHOLD,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> list[Redaction]:
        """Blur the regions of flagged images that the explanation points at, and
        re-classify; blur the whole image when that is not enough or when the
        explanation fails (it fails closed). Images below the threshold come back
        unchanged."""
        return redact_images(
            self,
            list(images),
            strength=strength,
            heat_threshold=heat_threshold,
            batch_size=batch_size,
        )

    @property
    def runtime_name(self) -> str:
        """``kind/precision`` of the runtime, e.g. ``openvino/bf16``."""
        return f"{self.runtime.kind}/{self.runtime.precision}"

    def _failed(self, source: str, error: PixguardError | None) -> Prediction:
        return Prediction(
            source=source,
            model=self.name,
            threshold=self.threshold,
            runtime=self.runtime_name,
            error=error,
        )

    def nsfw_scores(self, probabilities: np.ndarray) -> np.ndarray:
        """The NSFW score of each row: the summed probability of the NSFW classes."""
        return probabilities[:, self._nsfw_indices].sum(axis=1)

    def _decide(
        self,
        item: PreparedInput,
        probabilities: np.ndarray,
        embeddings: np.ndarray,
    ) -> Prediction:
        nsfw_scores = self.nsfw_scores(probabilities)
        best = int(np.argmax(nsfw_scores))
        score = float(nsfw_scores[best])
        return Prediction(
            source=item.source,
            model=self.name,
            threshold=self.threshold,
            runtime=self.runtime_name,
            label="nsfw" if score >= self.threshold else "sfw",
            nsfw_score=score,
            probabilities={
                label: float(p)
                for label, p in zip(self.spec.label_names, probabilities[best], strict=True)
            },
            embedding=embeddings[best].copy(),
            frame=item.frame_indices[best],
            frames_classified=len(item.frame_indices),
            frame_count=item.frame_count,
        )
