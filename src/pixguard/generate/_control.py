"""ControlNet for SD3.5: the control maps pixguard computes (canny edges, blur),
depth maps (given, or from a transformers depth model), and loading the
ControlNet and depth models from safetensors only."""

from __future__ import annotations

import os
from typing import Any, Literal

from .._exceptions import GenerationError
from ._loading import safetensors_location

__all__ = [
    "CONTROLNET_REPOS",
    "CONTROL_KINDS",
    "ControlKind",
    "control_condition",
    "load_controlnet",
    "load_depth_estimator",
]

ControlKind = Literal["canny", "blur", "depth"]
CONTROL_KINDS: tuple[str, ...] = ("canny", "blur", "depth")

#: Stability AI's official ControlNets for SD3.5 Large (diffusers format, gated).
CONTROLNET_REPOS: dict[str, str] = {
    kind: f"stabilityai/stable-diffusion-3.5-large-controlnet-{kind}" for kind in CONTROL_KINDS
}

#: Gaussian blur sigma as a fraction of the longer side: the layout and colours
#: survive, the detail does not (about 8 px at 1024 px, as in Stability's samples).
BLUR_SIGMA_FRACTION = 8 / 1024
#: skimage's Canny on a [0, 1] greyscale image: smoothing sigma and the hysteresis
#: thresholds on the gradient magnitude.
CANNY_SIGMA = 1.0
CANNY_LOW, CANNY_HIGH = 0.1, 0.2


def canny_map(image: Any) -> Any:
    """White Canny edges on black (scikit-image's detector)."""
    import numpy as np
    from PIL import Image
    from skimage.feature import canny

    grey = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    edges = canny(grey, sigma=CANNY_SIGMA, low_threshold=CANNY_LOW, high_threshold=CANNY_HIGH)
    return Image.fromarray((edges * 255).astype(np.uint8)).convert("RGB")


def blur_map(image: Any) -> Any:
    from PIL import ImageFilter

    radius = max(image.size) * BLUR_SIGMA_FRACTION
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(radius))


def control_condition(
    kind: str, image: Any, width: int, height: int, depth_estimator: Any = None
) -> Any:
    """What the ControlNet pipeline takes as ``control_image`` for ``kind``, from the
    user's (already screened) image at the output size.

    ``depth`` uses ``image`` as the depth map itself, unless a ``depth_estimator``
    (a transformers depth-estimation pipeline) is given to compute one from it.
    Stability's SD3.5 canny ControlNet was trained on edge maps scaled to
    ``x * 127.5 + 0.5`` rather than to [-1, 1] (its model card's image processor),
    so canny maps are handed over as that tensor."""
    image = image.convert("RGB").resize((width, height))
    if kind == "canny":
        from diffusers.image_processor import VaeImageProcessor

        unit = VaeImageProcessor(do_normalize=False).preprocess(
            canny_map(image), height=height, width=width
        )
        return unit * 255 * 0.5 + 0.5
    if kind == "blur":
        return blur_map(image)
    if kind == "depth":
        if depth_estimator is None:
            return image
        depth = depth_estimator(image)["depth"]
        return depth.convert("RGB").resize((width, height))
    raise GenerationError(f"unknown control {kind!r}; use one of {', '.join(CONTROL_KINDS)}")


def load_controlnet(source: str | os.PathLike[str], torch_dtype: Any) -> Any:
    """An ``SD3ControlNetModel`` from a Hub repo or a local folder, safetensors only."""
    from diffusers import SD3ControlNetModel

    location, weight_name = safetensors_location(source, "ControlNet")
    if weight_name is not None:
        raise GenerationError(
            "a ControlNet is a diffusers folder or Hub repo (config.json and weights), not one file",
            source=os.fspath(source),
        )
    try:
        return SD3ControlNetModel.from_pretrained(
            location, torch_dtype=torch_dtype, use_safetensors=True
        )
    except (OSError, ValueError) as exc:
        raise GenerationError(f"cannot load the ControlNet: {exc}", source=location) from exc


def load_depth_estimator(source: str | os.PathLike[str], device: str) -> Any:
    """A transformers depth-estimation pipeline (Depth Anything, DPT, ...), loaded
    from safetensors only."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation, pipeline

    location, weight_name = safetensors_location(source, "depth model")
    if weight_name is not None:
        raise GenerationError(
            "a depth model is a transformers folder or Hub repo, not one file",
            source=os.fspath(source),
        )
    try:
        model = AutoModelForDepthEstimation.from_pretrained(location, use_safetensors=True)
        processor = AutoImageProcessor.from_pretrained(location)
    except (OSError, ValueError) as exc:
        raise GenerationError(f"cannot load the depth model: {exc}", source=location) from exc
    return pipeline("depth-estimation", model=model, image_processor=processor, device=device)
