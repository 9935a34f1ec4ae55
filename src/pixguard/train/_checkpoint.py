"""Training checkpoints: weights and optimizer tensors in safetensors, the rest in
JSON, each file written atomically. Nothing is pickled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._files import atomic_file, write_json_atomic

__all__ = ["load_checkpoint", "load_weights", "read_state", "save_checkpoint", "save_weights"]


def save_weights(model: Any, path: Path) -> None:
    from safetensors.torch import save_file

    with atomic_file(path) as temporary:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(temporary))


def load_weights(model: Any, path: Path) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))


def save_checkpoint(folder: Path, model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    """``state.json`` is written last: a checkpoint counts only once it exists."""
    from safetensors.torch import save_file

    save_weights(model, folder / "model.safetensors")
    optimizer_state = optimizer.state_dict()
    tensors = {
        f"{index}.{name}": value.contiguous()
        for index, slots in optimizer_state["state"].items()
        for name, value in slots.items()
    }
    with atomic_file(folder / "optimizer.safetensors") as temporary:
        save_file(tensors, str(temporary))
    write_json_atomic(
        folder / "state.json", {**state, "param_groups": optimizer_state["param_groups"]}
    )


def read_state(folder: Path) -> dict[str, Any] | None:
    path = folder / "state.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_checkpoint(folder: Path, model: Any, optimizer: Any) -> dict[str, Any] | None:
    from safetensors.torch import load_file

    state = read_state(folder)
    if state is None:
        return None
    load_weights(model, folder / "model.safetensors")
    slots: dict[int, dict[str, Any]] = {}
    for key, value in load_file(str(folder / "optimizer.safetensors")).items():
        index, name = key.split(".", 1)
        slots.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": state.pop("param_groups")})
    return state
