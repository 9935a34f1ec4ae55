"""The LoRA itself: peft's adapter on the SD3 transformer's chosen modules, and its
weights saved in diffusers' LoRA file format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..._exceptions import TrainingError
from ._config import LoraTrainConfig

__all__ = ["LORA_WEIGHTS", "attach_lora", "save_lora"]

#: The file diffusers' ``save_lora_weights`` writes, and its loaders read.
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def attach_lora(transformer: Any, config: LoraTrainConfig) -> None:
    from peft import LoraConfig

    layers = transformer.config.num_layers
    if config.blocks is not None and any(not 0 <= b < layers for b in config.blocks):
        raise TrainingError(f"blocks must be in 0..{layers - 1}, got {list(config.blocks)}")
    transformer.requires_grad_(False)
    try:
        transformer.add_adapter(
            LoraConfig(
                r=config.rank,
                **_alpha_option(config),
                init_lora_weights="gaussian",
                target_modules=config.target_modules(),
            )
        )
    except ValueError as exc:  # peft: no module matched the targets
        raise TrainingError(f"cannot attach the LoRA: {exc}", source=config.targets) from exc


def _alpha_option(config: LoraTrainConfig) -> dict[str, Any]:
    """peft annotates ``lora_alpha`` as int, but scales by ``lora_alpha / r`` in
    floating point: fractional alphas are meant, and passed as they are."""
    return {"lora_alpha": config.alpha if config.alpha is not None else config.rank}


def save_lora(transformer: Any, output: Path) -> None:
    """``output/pytorch_lora_weights.safetensors``, with the adapter's settings."""
    from diffusers import StableDiffusion3Pipeline
    from peft.utils import get_peft_model_state_dict

    lora_layers = get_peft_model_state_dict(transformer)
    StableDiffusion3Pipeline.save_lora_weights(
        output,
        transformer_lora_layers={k: v.detach().float().cpu() for k, v in lora_layers.items()},
        transformer_lora_adapter_metadata=transformer.peft_config["default"].to_dict(),
    )
