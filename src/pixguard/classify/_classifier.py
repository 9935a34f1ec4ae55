"""Classifier: images in, predictions with probabilities and embeddings out."""

from __future__ import annotations

import itertools
import os
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
from ..images import DecodeLimits, ImageInput, describe_source, load_image, preprocess
from ..models import resolve_model
from ..runtimes import ParityReport, Runtime, load_runtime
from ._prediction import Prediction

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
        name = describe_source(source)
        pp = self.spec.preprocessing
        try:
            decoded = load_image(source, limits=self.limits, min_size=pp.resize_size)
            inputs = [preprocess(frame, pp) for frame in decoded.frames]
        except ImageError as exc:
            return PreparedInput(name, error=exc)
        except Exception as exc:
            return PreparedInput(
                name, error=ImageDecodeError(f"preprocessing failed: {exc}", source=name)
            )
        return PreparedInput(
            name,
            inputs=inputs,
            frame_indices=decoded.frame_indices,
            frame_count=decoded.frame_count,
        )

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

    def _decide(
        self,
        item: PreparedInput,
        probabilities: np.ndarray,
        embeddings: np.ndarray,
    ) -> Prediction:
        nsfw_scores = probabilities[:, self._nsfw_indices].sum(axis=1)
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
