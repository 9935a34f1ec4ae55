"""The linear probe: a linear head trained on frozen, cached embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._exceptions import DatasetError
from ._config import FinetuneConfig, Progress

__all__ = ["train_probe"]

#: Full-batch AdamW steps per epoch: an epoch over cached embeddings is one matrix
#: product, so one step per epoch would make early stopping needlessly coarse.
STEPS_PER_EPOCH = 50


def train_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    classes: int,
    config: FinetuneConfig,
    progress: Progress | None,
) -> tuple[Any, list[dict[str, Any]]]:
    """A linear head on frozen embeddings: full-batch AdamW, best epoch on val accuracy."""
    import torch

    head = torch.nn.Linear(train_x.shape[1], classes)
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=config.learning_rate(), weight_decay=config.weight_decay
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    vx, vy = torch.from_numpy(val_x), torch.from_numpy(val_y)
    best, best_state, waited = -1.0, None, 0
    history: list[dict[str, Any]] = []
    for epoch in range(config.epochs):
        for _ in range(STEPS_PER_EPOCH):
            optimizer.zero_grad()
            loss = loss_fn(head(x), y)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            accuracy = float((head(vx).argmax(1) == vy).float().mean()) if len(vy) else float("nan")
        history.append({"epoch": epoch + 1, "loss": float(loss.detach()), "val_accuracy": accuracy})
        if progress:
            progress({"stage": "training", **history[-1], "total_epochs": config.epochs})
        if accuracy > best:
            best, best_state, waited = (
                accuracy,
                {k: v.clone() for k, v in head.state_dict().items()},
                0,
            )
        else:
            waited += 1
            if waited >= config.patience:
                break
    if best_state is None:
        raise DatasetError("no validation image could be read")
    head.load_state_dict(best_state)
    return head, history
