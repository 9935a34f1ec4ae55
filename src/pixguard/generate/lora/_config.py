"""The settings of a LoRA training run, and what the run returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..._exceptions import TrainingError
from ._data import ScreeningReport

__all__ = ["LoraTrainConfig", "LoraTrainResult"]

#: The transformer modules diffusers' SD3 LoRA script adapts by default.
ATTENTION_MODULES = (
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
)
FEED_FORWARD_MODULES = ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")


@dataclass(frozen=True)
class LoraTrainConfig:
    """Training settings; the defaults follow diffusers' SD3 LoRA script."""

    rank: int = 16
    alpha: float | None = None  # None: equal to the rank
    targets: str = "attn"  # attn, attn+ff, or a comma-separated list of module names
    blocks: tuple[int, ...] | None = None  # only these transformer blocks
    steps: int = 1000
    lr: float = 1e-4
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    batch_size: int = 1
    grad_accumulation: int = 1
    resolution: int = 1024
    precision: str = "auto"  # auto, fp32, bf16, fp16
    gradient_checkpointing: bool = False
    drop_t5: bool = False
    cache_latents: bool = False
    logit_mean: float = 0.0
    logit_std: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100
    validation_prompt: str | None = None
    validation_every: int = 0  # 0: only at the end, when a validation prompt is given
    validation_steps: int | None = None  # None: the variant's recommendation
    max_sequence_length: int = 77

    def __post_init__(self) -> None:
        positive = {
            "rank": self.rank,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "grad_accumulation": self.grad_accumulation,
            "resolution": self.resolution,
            "checkpoint_every": self.checkpoint_every,
        }
        for name, value in positive.items():
            if value < 1:
                raise TrainingError(f"{name} must be at least 1, got {value}")
        if not self.lr > 0:
            raise TrainingError(f"the learning rate must be positive, got {self.lr}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise TrainingError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision}")
        if self.validation_every < 0:
            raise TrainingError("validation_every must be 0 (at the end) or more")

    def target_modules(self) -> list[str]:
        names = {
            "attn": list(ATTENTION_MODULES),
            "attn+ff": [*ATTENTION_MODULES, *FEED_FORWARD_MODULES],
        }.get(self.targets) or [name.strip() for name in self.targets.split(",") if name.strip()]
        if self.blocks is not None:
            names = [
                f"transformer_blocks.{block}.{name}" for block in self.blocks for name in names
            ]
        return names


@dataclass(frozen=True)
class LoraTrainResult:
    output: Path
    weights: Path
    steps: int
    resumed_from: int
    losses: list[float]
    screening: ScreeningReport
    validation: list[dict[str, Any]] = field(default_factory=list)
