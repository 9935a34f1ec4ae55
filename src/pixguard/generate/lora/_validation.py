"""Validation images during LoRA training: the LoRA as trained so far, through the
safety gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._gate import SafetyGate
from .._generator import write_gated_png
from ._config import LoraTrainConfig

__all__ = ["validate"]


def validate(
    pipeline: Any,
    gate: SafetyGate,
    embeddings: dict[str, tuple[Any, Any]],
    config: LoraTrainConfig,
    variant: Any,
    step: int,
    output: Path,
) -> list[dict[str, Any]]:
    """One image from the validation prompt with the LoRA as trained so far, through
    the gate: blocked images are neither written nor returned."""
    import torch

    assert config.validation_prompt is not None
    steps = config.validation_steps or (variant.steps if variant else 28)
    guidance = variant.guidance if variant else 3.5
    embeds, pooled = embeddings[config.validation_prompt]
    negative, negative_pooled = embeddings[""]
    dtype = pipeline.vae.dtype
    pipeline.transformer.eval()
    with torch.no_grad():
        image = pipeline(
            prompt_embeds=embeds.to(pipeline.device, dtype),
            pooled_prompt_embeds=pooled.to(pipeline.device, dtype),
            negative_prompt_embeds=negative.to(pipeline.device, dtype),
            negative_pooled_prompt_embeds=negative_pooled.to(pipeline.device, dtype),
            num_inference_steps=steps,
            guidance_scale=guidance,
            width=config.resolution,
            height=config.resolution,
            generator=torch.Generator("cpu").manual_seed(config.seed),
            output_type="pil",
        ).images[0]
    decision = gate.check([image])[0]
    del image  # the ungated image goes no further than the gate
    parameters = (
        f"{config.validation_prompt}\nSteps: {steps}, CFG scale: {guidance}, Seed: {config.seed}, "
        f"Size: {config.resolution}x{config.resolution}, LoRA step: {step}, pixguard: {decision.decision}"
    )
    path = None
    if decision.image is not None:
        path = write_gated_png(
            decision, parameters, output / "validation" / f"step-{step}", config.seed
        )
    return [{**decision.to_dict(), "path": str(path) if path else None}]
