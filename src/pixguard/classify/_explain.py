"""Explanations: where in an image a model's NSFW score comes from.

The heatmap methods live in :mod:`pixguard.runtimes` (Grad-CAM on an eager torch
copy of the model, or occlusion with the classifying runtime); this module maps
their heat from the model input back onto the image, reduces it to a coarse grid
for JSON, and draws overlays.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .._exceptions import ExplanationError, PixguardError
from ..images import DecodeLimits, ImageInput, crop_box
from ._prediction import Prediction

if TYPE_CHECKING:
    from ._classifier import Classifier

__all__ = [
    "EXPLANATION_GRID",
    "OVERLAY_MAX_SIDE",
    "DeletionCheck",
    "Explanation",
    "deletion_check",
    "explain_images",
]

#: Rows and columns of the coarse grid in JSON output.
EXPLANATION_GRID = 8
#: Overlays and grids are computed on the image scaled to at most this longest side.
OVERLAY_MAX_SIDE = 1024
#: Opacity of the heat colours where the heat is 1.
OVERLAY_OPACITY = 0.6
OVERLAY_COLORMAP = "jet"


@dataclass(frozen=True)
class Explanation:
    """A heatmap of the NSFW evidence in one image, beside its prediction.

    Attributes:
        prediction: the classifier's prediction for the input (from its runtime).
        method: ``grad-cam`` or ``occlusion`` (None when there is no heatmap).
        heatmap: ``(H, W)`` float32 in [0, 1] over the model input, 1 the strongest
            evidence for NSFW; all zeros when nothing in the image raises the score.
        box: (left, top, right, bottom) of the model input inside ``image``.
        image: the RGB frame that was explained (the highest-scoring one).
        error: why there is no heatmap, if there is none.
    """

    prediction: Prediction
    method: str | None = None
    heatmap: np.ndarray | None = field(default=None, repr=False, compare=False)
    box: tuple[float, float, float, float] | None = None
    image: Image.Image | None = field(default=None, repr=False, compare=False)
    error: PixguardError | None = None

    @property
    def source(self) -> str:
        return self.prediction.source

    @property
    def ok(self) -> bool:
        return self.error is None and self.heatmap is not None

    def heat_at(self, size: tuple[int, int]) -> np.ndarray:
        """The heat over the whole image, resampled to ``size`` (width, height):
        ``(height, width)`` float32; zero outside the region the model saw."""
        if self.heatmap is None or self.box is None or self.image is None:
            raise ValueError("this explanation has no heatmap")
        width, height = size
        scale_x, scale_y = width / self.image.width, height / self.image.height
        left, top, right, bottom = self.box
        left, right = round(left * scale_x), round(right * scale_x)
        top, bottom = round(top * scale_y), round(bottom * scale_y)
        canvas = np.zeros((height, width), np.float32)
        if right <= left or bottom <= top:
            return canvas
        heat = Image.fromarray(self.heatmap, mode="F").resize(
            (right - left, bottom - top), Image.Resampling.BILINEAR
        )
        resampled = np.clip(np.asarray(heat, np.float32), 0.0, 1.0)
        # The crop lies inside the image; rounding may push it one pixel out.
        src_x, src_y = max(0, -left), max(0, -top)
        dst_x, dst_y = max(0, left), max(0, top)
        w = min(width, right) - dst_x
        h = min(height, bottom) - dst_y
        canvas[dst_y : dst_y + h, dst_x : dst_x + w] = resampled[
            src_y : src_y + h, src_x : src_x + w
        ]
        return canvas

    def preview_size(self) -> tuple[int, int]:
        """The image's size scaled to at most :data:`OVERLAY_MAX_SIDE`."""
        assert self.image is not None
        scale = min(1.0, OVERLAY_MAX_SIDE / max(self.image.size))
        return max(1, round(self.image.width * scale)), max(1, round(self.image.height * scale))

    def grid(self, rows: int = EXPLANATION_GRID, cols: int = EXPLANATION_GRID) -> dict[str, Any]:
        """The mean heat of ``rows`` x ``cols`` cells, row-major from the top-left."""
        width, height = self.preview_size()
        heat = self.heat_at((max(width, cols), max(height, rows)))
        row_edges = np.linspace(0, heat.shape[0], rows + 1).round().astype(int)
        col_edges = np.linspace(0, heat.shape[1], cols + 1).round().astype(int)
        values = [
            [round(float(heat[r0:r1, c0:c1].mean()), 4) for c0, c1 in itertools.pairwise(col_edges)]
            for r0, r1 in itertools.pairwise(row_edges)
        ]
        return {"rows": rows, "cols": cols, "values": values}

    def overlay(self) -> Image.Image:
        """The image with the heat drawn over it in colour (longest side at most
        :data:`OVERLAY_MAX_SIDE`)."""
        from matplotlib import colormaps

        size = self.preview_size()
        assert self.image is not None
        base = np.asarray(self.image.convert("RGB").resize(size), np.float32)
        heat = self.heat_at(size)
        colours = colormaps[OVERLAY_COLORMAP](heat)[:, :, :3] * 255.0
        alpha = (OVERLAY_OPACITY * heat)[:, :, None]
        return Image.fromarray((base * (1 - alpha) + colours * alpha).round().astype(np.uint8))

    def to_dict(self) -> dict[str, Any] | None:
        """The JSON ``explanation`` field: the grid and the method, or None."""
        if not self.ok:
            return None
        return {"method": self.method, **self.grid()}


def explain_images(
    classifier: Classifier,
    images: list[ImageInput],
    *,
    batch_size: int,
    limits: DecodeLimits | None = None,
) -> list[Explanation]:
    """Classify ``images`` and explain the highest-scoring frame of each."""
    loaded = [classifier.prepare_keeping_frames(image, limits=limits) for image in images]
    predictions = classifier.predict_prepared([item for item, _ in loaded], batch_size=batch_size)
    explained: list[tuple[int, np.ndarray, Image.Image]] = []
    for position, ((item, decoded), prediction) in enumerate(zip(loaded, predictions, strict=True)):
        if prediction.ok and decoded is not None and item.inputs is not None:
            chosen = item.frame_indices.index(prediction.frame)
            explained.append((position, item.inputs[chosen], decoded.frames[chosen]))
    results = [Explanation(prediction) for prediction in predictions]
    if not explained:
        return results
    try:
        with classifier.explain_lock:
            method = classifier.heatmap_method()
            heat = [
                method.heat(
                    np.stack([array for _, array, _ in explained[start : start + batch_size]])
                )
                for start in range(0, len(explained), batch_size)
            ]
        maps = np.concatenate(heat)
    except Exception as exc:
        error = (
            exc
            if isinstance(exc, PixguardError)
            else ExplanationError(
                f"explanation failed: {type(exc).__name__}: {exc}", source=classifier.name
            )
        )
        for position, _, frame in explained:
            results[position] = Explanation(predictions[position], image=frame, error=error)
        return results
    pp = classifier.spec.preprocessing
    for (position, _, frame), heatmap in zip(explained, maps, strict=True):
        results[position] = Explanation(
            predictions[position],
            method=method.name,
            heatmap=heatmap,
            box=crop_box(frame.size, pp),
            image=frame,
        )
    return results


@dataclass(frozen=True)
class DeletionCheck:
    """The deletion test of one explanation: the score with the hottest square of
    grid cells greyed out, against squares of the same size at random places.

    Attributes:
        score: the image's NSFW score.
        hot_score: the score with the hottest square deleted.
        random_scores: the scores with random squares deleted.
    """

    score: float
    hot_score: float
    random_scores: tuple[float, ...]

    @property
    def hot_drop(self) -> float:
        return self.score - self.hot_score

    @property
    def random_drop(self) -> float:
        return self.score - float(np.mean(self.random_scores))


#: Deleted regions are filled with mid grey.
DELETION_FILL = (128, 128, 128)


def deletion_check(
    classifier: Classifier,
    image: Image.Image,
    *,
    cells: int = 3,
    random_regions: int = 8,
    seed: int = 0,
) -> DeletionCheck:
    """Explain ``image``, delete the ``cells`` x ``cells`` square of the coarse grid
    holding the most heat, and compare the score drop with ``random_regions``
    random squares of the same size: a faithful heatmap drops the score more."""
    explanation = classifier.explain([image])[0]
    if not explanation.ok:
        raise explanation.error or ExplanationError("no explanation", source=classifier.name)
    score = explanation.prediction.nsfw_score
    assert score is not None
    values = np.asarray(explanation.grid()["values"])
    positions = EXPLANATION_GRID - cells + 1
    sums = np.array(
        [
            [values[r : r + cells, c : c + cells].sum() for c in range(positions)]
            for r in range(positions)
        ]
    )
    cell_w, cell_h = image.width / EXPLANATION_GRID, image.height / EXPLANATION_GRID

    def deleted(row: int, col: int) -> Image.Image:
        out = image.convert("RGB")
        box = (
            round(col * cell_w),
            round(row * cell_h),
            round((col + cells) * cell_w),
            round((row + cells) * cell_h),
        )
        out.paste(DELETION_FILL, box)
        return out

    hot_row, hot_col = (int(v) for v in np.unravel_index(int(sums.argmax()), sums.shape))
    rng = np.random.default_rng(seed)
    randoms = [
        deleted(*(int(v) for v in rng.integers(0, positions, 2))) for _ in range(random_regions)
    ]
    scores: list[float] = []
    for prediction in classifier.predict([deleted(hot_row, hot_col), *randoms]):
        if prediction.nsfw_score is None:
            raise prediction.error or ExplanationError(
                "a deleted copy got no score", source=classifier.name
            )
        scores.append(prediction.nsfw_score)
    return DeletionCheck(score, scores[0], tuple(scores[1:]))
