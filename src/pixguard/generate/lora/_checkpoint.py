"""LoRA training bookkeeping: checkpoints (safetensors + JSON, no pickle) and the
fingerprint that says whether one may be resumed, the ``train.log`` of JSON lines,
and the loss plot.

A checkpoint is a folder ``checkpoint/step-N`` holding the LoRA weights and the
optimizer tensors as safetensors and everything else as JSON, written as one
atomic folder; ``checkpoint/latest.json`` names the newest and is written after
it, so a crash while saving leaves the previous checkpoint in charge.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..._exceptions import TrainingError
from ..._files import atomic_file, atomic_folder, atomic_text_file, file_sha256, write_json_atomic
from ._config import LoraTrainConfig
from ._data import CaptionedImage

__all__ = ["TrainLog", "load_checkpoint", "plot_losses", "run_fingerprint", "save_checkpoint"]

_LATEST = "latest.json"
_WEIGHTS = "lora.safetensors"
_OPTIMIZER = "optimizer.safetensors"
_STATE = "state.json"


def run_fingerprint(items: list[CaptionedImage], variant: str, config: LoraTrainConfig) -> str:
    """What must match for a checkpoint to be resumed: the data and every setting
    that shapes the run (not its length, checkpoints or validation)."""
    excluded = {
        "steps",
        "checkpoint_every",
        "validation_prompt",
        "validation_every",
        "validation_steps",
    }
    settings = {k: v for k, v in asdict(config).items() if k not in excluded}
    data = [(str(item.path), item.caption, file_sha256(item.path)) for item in items]
    text = json.dumps({"variant": variant, "settings": settings, "data": data}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _save_tensors(tensors: dict[str, Any], target: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(target))


def save_checkpoint(
    folder: Path, step: int, weights: dict[str, Any], optimizer: Any, state: dict[str, Any]
) -> Path:
    """Save the trainable weights, the optimizer and ``state`` as ``folder/step-N``,
    then point ``latest.json`` at it and drop older checkpoints."""
    target = folder / f"step-{step}"
    optimizer_state = optimizer.state_dict()
    with atomic_folder(target, replace=True) as scratch:
        _save_tensors(weights, scratch / _WEIGHTS)
        _save_tensors(
            {
                f"{index}.{name}": value
                for index, slots in optimizer_state["state"].items()
                for name, value in slots.items()
            },
            scratch / _OPTIMIZER,
        )
        write_json_atomic(
            scratch / _STATE,
            {**state, "step": step, "param_groups": optimizer_state["param_groups"]},
        )
    write_json_atomic(folder / _LATEST, {"step": step, "folder": target.name})
    for old in folder.glob("step-*"):
        if old != target and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(
    folder: Path, module: Any, optimizer: Any, *, fingerprint: str
) -> dict[str, Any] | None:
    """Restore the newest checkpoint into ``module`` (its trainable weights) and
    ``optimizer``; returns its state, or None when there is none. A checkpoint of
    another run (its ``fingerprint`` differs) is refused, never half-loaded."""
    from safetensors.torch import load_file

    latest = folder / _LATEST
    if not latest.is_file():
        return None
    try:
        target = folder / json.loads(latest.read_text(encoding="utf-8"))["folder"]
        state = json.loads((target / _STATE).read_text(encoding="utf-8"))
        if state.get("fingerprint") != fingerprint:
            raise TrainingError(
                f"{folder} holds a checkpoint of a different run (other data, model or "
                "settings); rerun with --no-resume to start afresh, or use another --output",
                source=str(folder),
            )
        weights = load_file(str(target / _WEIGHTS))
        optimizer_tensors = load_file(str(target / _OPTIMIZER))
    except (OSError, ValueError, KeyError) as exc:
        raise TrainingError(
            f"the checkpoint cannot be read ({exc}); rerun with --no-resume to start afresh",
            source=str(folder),
        ) from exc
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    if set(weights) != trainable:
        raise TrainingError(
            "the checkpoint's LoRA layers differ from this run's; rerun with --no-resume",
            source=str(folder),
        )
    module.load_state_dict(weights, strict=False)
    slots: dict[int, dict[str, Any]] = {}
    for key, value in optimizer_tensors.items():
        index, name = key.split(".", 1)
        slots.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": state.pop("param_groups")})
    return state


class TrainLog:
    """``train.log``: one JSON object per line. On resume, lines after the
    checkpoint's step are dropped, so the log reads as one uninterrupted run."""

    def __init__(self, path: Path, *, keep_until: int | None) -> None:
        self.path = path
        kept = [r for r in self.records() if keep_until is not None and r["step"] <= keep_until]
        with atomic_text_file(path) as stream:
            stream.writelines(json.dumps(record) + "\n" for record in kept)
        self._stream = path.open("a", encoding="utf-8")

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with self.path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def write(self, record: dict[str, Any]) -> None:
        self._stream.write(json.dumps(record) + "\n")
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()


def plot_losses(records: list[dict[str, Any]], target: Path) -> None:
    """The training loss per step, with a moving average, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    points = [(r["step"], r["loss"]) for r in records if "loss" in r]
    if not points:
        return
    steps, losses = (np.asarray(v, dtype=np.float64) for v in zip(*points, strict=True))
    window = max(1, len(losses) // 10)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot(steps, losses, alpha=0.35, label="loss")
    axes.plot(steps[window - 1 :], smooth, label=f"moving average ({window} steps)")
    axes.set_xlabel("step")
    axes.set_ylabel("flow-matching loss")
    axes.legend()
    figure.tight_layout()
    with atomic_file(target) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)
