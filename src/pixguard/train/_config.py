"""Fine-tuning settings, checked when they are made."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .._exceptions import TrainingError

__all__ = ["FinetuneConfig", "Progress"]

#: Called with progress events (``stage``, ``epoch``, ``loss``, ...).
Progress = Callable[[dict[str, Any]], None]


@dataclass
class FinetuneConfig:
    """Training settings; the defaults suit a few thousand images on a CPU."""

    mode: Literal["linear", "full"] = "linear"
    epochs: int = 10
    batch_size: int = 32
    lr: float | None = None  # linear: 1e-2, full: 1e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    grad_accumulation: int = 1
    unfreeze_blocks: int | None = None  # full mode: only the last N blocks train
    patience: int = 3
    val_fraction: float = 0.2
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    threshold: float = 0.5

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in ("linear", "full"):
            problems.append(f"mode must be linear or full, not {self.mode!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            problems.append(f"precision must be auto, fp32 or bf16, not {self.precision!r}")
        if not 0.0 <= self.threshold <= 1.0:
            problems.append("threshold must be in [0, 1]")
        if self.unfreeze_blocks is not None and self.unfreeze_blocks < 0:
            problems.append("unfreeze_blocks cannot be negative")
        if (
            self.epochs < 1
            or self.batch_size < 1
            or self.grad_accumulation < 1
            or self.patience < 1
        ):
            problems.append("epochs, batch_size, grad_accumulation and patience must be at least 1")
        if problems:
            raise TrainingError("; ".join(problems))

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-2 if self.mode == "linear" else 1e-4)
