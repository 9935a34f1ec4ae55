"""Generator: Stable Diffusion 3.5 through diffusers, behind the safety gate."""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import PngImagePlugin

from .._exceptions import GenerationError, PromptRefusedError
from .._files import atomic_file
from ..classify import Classifier
from ..models import DEFAULT_MODEL
from ._control import (
    CONTROL_KINDS,
    CONTROLNET_REPOS,
    control_condition,
    load_controlnet,
    load_depth_estimator,
)
from ._gate import BlurScope, GateAction, GateDecision, SafetyGate
from ._loading import load_loras, load_pipeline
from ._variants import Variant

__all__ = ["GeneratedImage", "Generator", "pick_device", "write_gated_png"]

_SIZE_MULTIPLE = 16
_MAX_UNKNOWN_PIXELS = 4 * 1024 * 1024
_SAMPLER = "FlowMatchEulerDiscrete"


@dataclass(frozen=True)
class GeneratedImage:
    """One generated image after the gate. ``path`` is None when it was blocked
    (or not written, without an output folder)."""

    seed: int
    gate: GateDecision
    parameters: str
    path: Path | None = None

    @property
    def image(self) -> Any:
        return self.gate.image

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path) if self.path else None,
            "seed": self.seed,
            **self.gate.to_dict(),
        }


def pick_device(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _screen(prompt: str, rules: Sequence[str]) -> None:
    """Refuse a prompt before any compute: plain terms match whole words, ``re:``
    rules are regular expressions; both ignore case."""
    for rule in rules:
        pattern = rule[3:] if rule.startswith("re:") else rf"\b{re.escape(rule)}\b"
        if re.search(pattern, prompt, flags=re.IGNORECASE):
            raise PromptRefusedError("the prompt matches the screening list", source=rule)


class Generator:
    """Text-to-image where nothing unsafe leaves: every image is classified by
    pixguard before it is written or returned (see :class:`SafetyGate`)."""

    def __init__(
        self,
        pipeline: Any,
        gate: SafetyGate,
        *,
        name: str,
        variant: Variant | None,
        prompt_screen: Sequence[str] = (),
    ) -> None:
        self.pipeline = pipeline
        self.gate = gate
        self.name = name
        self.variant = variant
        self.prompt_screen = list(prompt_screen)
        # ControlNet pipelines and depth models, loaded on first use and kept warm.
        self._control_pipelines: dict[str, Any] = {}
        self._depth_estimators: dict[str, Any] = {}

    @classmethod
    def load(
        cls,
        variant: str | os.PathLike[str] = "sd3.5-large-turbo",
        *,
        config: str | os.PathLike[str] | None = None,
        safety_model: str | os.PathLike[str] = DEFAULT_MODEL,
        safety_threshold: float | None = None,
        safety_action: GateAction = "block",
        blur_scope: BlurScope = "whole",
        classifier: Classifier | None = None,
        device: str = "auto",
        dtype: str = "auto",
        drop_t5: bool = False,
        cpu_offload: bool = False,
        vae_tiling: bool = False,
        prompt_screen: Sequence[str] = (),
        loras: Sequence[tuple[str | os.PathLike[str], float]] = (),
        compile: bool = False,
    ) -> Generator:
        """Load a registry variant (Hub id; gated: log in or set HF_TOKEN), a local
        diffusers folder, or a ``.safetensors`` single-file checkpoint whose configs,
        tokenizers and missing text encoders come from ``config`` (a variant name, a
        Hub repo id, or a local diffusers folder for offline use; SD3.5 Large and
        Medium files are recognised without one). The safety classifier loads first:
        no gate, no generator.

        ``loras`` are (path, weight) pairs of LoRA adapters in diffusers/PEFT format,
        active together, each at its own weight. ``compile`` runs the transformer
        through ``torch.compile`` (a one-off compilation, then faster steps on GPUs)."""
        import torch

        gate = SafetyGate(
            classifier or Classifier.load(safety_model, threshold=safety_threshold),
            action=safety_action,
            blur_scope=blur_scope,
        )
        target = pick_device(device)
        torch_dtype = {
            "auto": torch.bfloat16 if target == "cuda" else torch.float32,
            "fp32": torch.float32,
            "bf16": torch.bfloat16,
            "fp16": torch.float16,
        }[dtype]
        loaded = load_pipeline(variant, config=config, torch_dtype=torch_dtype, drop_t5=drop_t5)
        pipeline = loaded.pipeline
        if cpu_offload:
            pipeline.enable_model_cpu_offload()
        else:
            pipeline.to(target)
        if vae_tiling:
            pipeline.vae.enable_tiling()
        if loras:
            load_loras(pipeline, loras)
        if compile:
            pipeline.transformer = torch.compile(pipeline.transformer)
        pipeline.set_progress_bar_config(disable=True)
        return cls(
            pipeline,
            gate,
            name=loaded.name,
            variant=loaded.variant,
            prompt_screen=prompt_screen,
        )

    def _image_pipeline(
        self, init_image: Any, mask: Any, strength: float, width: int, height: int
    ) -> tuple[Any, dict[str, Any]]:
        """The img2img or inpaint pipeline sharing this pipeline's components."""
        from diffusers import StableDiffusion3Img2ImgPipeline, StableDiffusion3InpaintPipeline

        if not 0.0 < strength <= 1.0:
            raise GenerationError("strength must be in (0, 1]")
        image = _load_input_image(init_image, width, height)
        if mask is None:
            return StableDiffusion3Img2ImgPipeline.from_pipe(self.pipeline), {
                "image": image,
                "strength": strength,
            }
        mask_image = _load_input_image(mask, width, height).convert("L")
        inpaint = StableDiffusion3InpaintPipeline.from_pipe(self.pipeline)
        return inpaint, {"image": image, "mask_image": mask_image, "strength": strength}

    def _control_pipeline(
        self,
        kind: str,
        control_image: Any,
        scale: float,
        model: str | os.PathLike[str] | None,
        depth_model: str | os.PathLike[str] | None,
        width: int,
        height: int,
    ) -> tuple[Any, dict[str, Any]]:
        """The ControlNet pipeline sharing this pipeline's components, and its
        arguments. The control image is screened by the gate's classifier first."""
        from diffusers import StableDiffusion3ControlNetPipeline

        from ..images import describe_source, load_image

        if kind not in CONTROL_KINDS:
            raise GenerationError(
                f"unknown control {kind!r}; use one of {', '.join(CONTROL_KINDS)}"
            )
        if control_image is None:
            raise GenerationError(f"--control {kind} needs a control image")
        if not scale >= 0.0:
            raise GenerationError(f"the control scale must be 0 or more, got {scale}")
        if depth_model is not None and kind != "depth":
            raise GenerationError("a depth model is only for --control depth")
        source = os.fspath(model if model is not None else CONTROLNET_REPOS[kind])
        image = (
            control_image.convert("RGB")
            if hasattr(control_image, "convert")
            else load_image(control_image, limits=self.gate.classifier.limits).frames[0]
        )
        self.gate.screen_input(image, describe_source(control_image))
        estimator = None
        if depth_model is not None:
            key = os.fspath(depth_model)
            if key not in self._depth_estimators:
                self._depth_estimators[key] = load_depth_estimator(key, self.pipeline.device.type)
            estimator = self._depth_estimators[key]
        if source not in self._control_pipelines:
            controlnet = load_controlnet(source, self.pipeline.transformer.dtype)
            controlnet.to(self.pipeline.device)
            control = StableDiffusion3ControlNetPipeline.from_pipe(
                self.pipeline, controlnet=controlnet
            )
            control.set_progress_bar_config(disable=True)
            self._control_pipelines[source] = control
        condition = control_condition(kind, image, width, height, estimator)
        return self._control_pipelines[source], {
            "control_image": condition,
            "controlnet_conditioning_scale": float(scale),
        }

    def _check_size(self, width: int, height: int) -> None:
        if width <= 0 or height <= 0 or width % _SIZE_MULTIPLE or height % _SIZE_MULTIPLE:
            raise GenerationError(
                f"width and height must be positive multiples of {_SIZE_MULTIPLE}, got {width}x{height}"
            )
        low, high = (
            (self.variant.min_pixels, self.variant.max_pixels)
            if self.variant
            else (1, _MAX_UNKNOWN_PIXELS)
        )
        if not low <= width * height <= high:
            raise GenerationError(
                f"{width}x{height} is outside {self.name}'s range of {low:,} to {high:,} pixels"
            )

    def __call__(
        self,
        prompt: str,
        *,
        negative_prompt: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        width: int | None = None,
        height: int | None = None,
        seed: int | None = None,
        num_images: int = 1,
        output_dir: str | os.PathLike[str] | None = None,
        retry_blocked: int = 0,
        on_step: Callable[[int, int], None] | None = None,
        init_image: Any = None,
        strength: float = 0.6,
        mask: Any = None,
        control: str | None = None,
        control_image: Any = None,
        control_scale: float = 1.0,
        control_model: str | os.PathLike[str] | None = None,
        depth_model: str | os.PathLike[str] | None = None,
    ) -> list[GeneratedImage]:
        """Generate ``num_images`` images (seeds ``seed``, ``seed+1``, ...), each through
        the gate; with ``retry_blocked`` N, up to N more seeds replace blocked ones.

        With ``init_image`` (a path or PIL image) this is img2img at ``strength``;
        with a ``mask`` as well (white = repaint), inpainting.

        With ``control`` (canny, blur or depth) and a ``control_image``, a ControlNet
        guides the image at ``control_scale`` (0: no guidance). ``control_model`` is a
        diffusers ControlNet folder or Hub repo (default: Stability's SD3.5 Large one
        for the kind); for depth, the control image is the depth map, unless
        ``depth_model`` (a transformers depth-estimation model) computes it. The
        control image is screened by the safety classifier first."""
        import torch

        _screen(prompt, self.prompt_screen)
        defaults = self.variant
        if steps is None:
            steps = defaults.steps if defaults else 28
        guidance = guidance if guidance is not None else (defaults.guidance if defaults else 3.5)
        if width is None:
            width = defaults.default_size[0] if defaults else 1024
        if height is None:
            height = defaults.default_size[1] if defaults else 1024
        self._check_size(width, height)
        if steps < 1 or num_images < 1 or retry_blocked < 0:
            raise GenerationError(
                "steps and num_images must be at least 1, retry_blocked at least 0"
            )
        seed = secrets.randbits(31) if seed is None else seed
        extra: dict[str, Any] = {}
        pipeline = self.pipeline
        if control is not None and (init_image is not None or mask is not None):
            raise GenerationError("ControlNet does not combine with img2img or inpainting")
        if control is not None:
            pipeline, extra = self._control_pipeline(
                control, control_image, control_scale, control_model, depth_model, width, height
            )
        elif control_image is not None:
            raise GenerationError("a control image needs --control canny, blur or depth")
        elif init_image is not None:
            pipeline, extra = self._image_pipeline(init_image, mask, strength, width, height)
        elif mask is not None:
            raise GenerationError("a mask needs an init image (inpainting)")
        elif defaults and defaults.skip_layer_guidance:
            extra["skip_guidance_layers"] = list(defaults.skip_layer_guidance)
        results: list[GeneratedImage] = []
        safe = attempt = 0
        while safe < num_images and attempt < num_images + retry_blocked:
            image_seed = seed + attempt
            attempt += 1

            def step_end(
                pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]
            ) -> dict[str, Any]:
                if on_step is not None:
                    on_step(step + 1, steps)
                return kwargs

            # The ControlNet pipeline encodes the control image with a VAE sample from
            # torch's global generator; seeding it keeps "same seed, same image".
            with torch.random.fork_rng(enabled=control is not None):
                if control is not None:
                    torch.manual_seed(image_seed)
                output = pipeline(
                    prompt,
                    negative_prompt=negative_prompt,
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    width=width,
                    height=height,
                    generator=torch.Generator("cpu").manual_seed(image_seed),
                    output_type="pil",
                    callback_on_step_end=step_end,
                    **extra,
                )
            decision = self.gate.check([output.images[0]])[0]
            del output  # the ungated image goes no further than the gate
            parameters = (
                f"{prompt}\nNegative prompt: {negative_prompt or ''}\nSteps: {steps}, Sampler: {_SAMPLER}, "
                f"CFG scale: {guidance}, Seed: {image_seed}, Size: {width}x{height}, Model: {self.name}, "
                f"pixguard: {decision.decision}"
            )
            path = None
            if decision.image is not None and output_dir is not None:
                path = write_gated_png(decision, parameters, Path(output_dir), image_seed)
            results.append(GeneratedImage(image_seed, decision, parameters, path))
            if decision.image is not None:
                safe += 1
        return results


def _load_input_image(value: Any, width: int, height: int) -> Any:
    from ..images import load_image

    image = value.convert("RGB") if hasattr(value, "convert") else load_image(value).frames[0]
    return image.resize((width, height))


def write_gated_png(decision: GateDecision, parameters: str, folder: Path, seed: int) -> Path:
    """Atomically write a gated image with A1111-style ``parameters`` and the verdict."""
    assert decision.image is not None
    folder.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    info.add_text("pixguard", json.dumps(decision.to_dict()))
    target = folder / f"{seed}-{secrets.token_hex(3)}.png"
    with atomic_file(target) as temporary:
        decision.image.save(temporary, format="PNG", pnginfo=info)
    return target
