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
from ._gate import GateAction, GateDecision, SafetyGate
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

    @classmethod
    def load(
        cls,
        variant: str | os.PathLike[str] = "sd3.5-large-turbo",
        *,
        config: str | os.PathLike[str] | None = None,
        safety_model: str | os.PathLike[str] = DEFAULT_MODEL,
        safety_threshold: float | None = None,
        safety_action: GateAction = "block",
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
    ) -> list[GeneratedImage]:
        """Generate ``num_images`` images (seeds ``seed``, ``seed+1``, ...), each through
        the gate; with ``retry_blocked`` N, up to N more seeds replace blocked ones.

        With ``init_image`` (a path or PIL image) this is img2img at ``strength``;
        with a ``mask`` as well (white = repaint), inpainting."""
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
        if init_image is not None:
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
