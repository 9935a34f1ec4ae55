"""Full fine-tuning: all layers, or the last N blocks and the head, with timm's
training transforms, scheduler and loss; checkpointed every epoch, resumable."""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .._exceptions import ImageError, TrainingError
from ..images import DecodeLimits, load_image, preprocess
from ..runtimes import ModelArtifacts, bf16_supported
from ._checkpoint import load_checkpoint, load_weights, read_state, save_checkpoint, save_weights
from ._config import FinetuneConfig, Progress
from ._data import Dataset

__all__ = ["train_full"]

#: Seeds per epoch are spread this far apart, so epochs never share a stream.
_EPOCH_SEED_STRIDE = 100_003


class _Images:
    """Training images through timm's training transforms; bad files are skipped."""

    def __init__(self, dataset: Dataset, transform: Any, pp: Any, training: bool) -> None:
        self.samples = list(zip(dataset.paths, dataset.targets.tolist(), strict=True))
        self.transform, self.pp, self.training = transform, pp, training

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import torch

        path, target = self.samples[i]
        try:
            frame = load_image(path, limits=DecodeLimits(), min_size=self.pp.resize_size).frames[0]
        except ImageError:
            return torch.zeros(self.pp.input_size), -100  # ignored by the loss
        if self.training:
            return self.transform(frame), target
        return torch.from_numpy(preprocess(frame, self.pp)), target


def train_full(
    artifacts: ModelArtifacts,
    train: Dataset,
    val: Dataset,
    config: FinetuneConfig,
    checkpoints: Path,
    progress: Progress | None,
    *,
    resume: bool,
) -> tuple[Any, list[dict[str, Any]]]:
    import torch
    from timm.data import create_transform, resolve_model_data_config
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.scheduler import CosineLRScheduler

    model = artifacts.torch_fp32().model
    model.reset_classifier(len(train.classes))
    if config.unfreeze_blocks is not None:
        if not hasattr(model, "blocks"):
            raise TrainingError("--unfreeze-blocks needs a model with .blocks (ViT-style)")
        if config.unfreeze_blocks > len(model.blocks):
            raise TrainingError(
                f"the model has {len(model.blocks)} blocks; --unfreeze-blocks {config.unfreeze_blocks} is too many"
            )
        for parameter in model.parameters():
            parameter.requires_grad = False
        trainable = [
            *model.blocks[len(model.blocks) - config.unfreeze_blocks :],
            model.get_classifier(),
        ]
        trainable += [
            getattr(model, name)
            for name in ("norm", "fc_norm")
            if isinstance(getattr(model, name, None), torch.nn.Module)
        ]
        for module in trainable:
            for parameter in module.parameters():
                parameter.requires_grad = True
    pp = artifacts.spec.preprocessing
    train_tf = create_transform(**resolve_model_data_config(model), is_training=True)
    generator = torch.Generator().manual_seed(config.seed)
    # _Images is a map-style dataset (len and getitem), which DataLoader takes as
    # it is; torch's annotations ask for its own Dataset class.
    train_images: Any = _Images(train, train_tf, pp, True)
    val_images: Any = _Images(val, None, pp, False)
    loader = torch.utils.data.DataLoader(
        train_images, batch_size=config.batch_size, shuffle=True, generator=generator
    )
    val_loader = torch.utils.data.DataLoader(val_images, batch_size=config.batch_size)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.learning_rate(),
        weight_decay=config.weight_decay,
    )
    updates_per_epoch = max(1, math.ceil(len(loader) / config.grad_accumulation))
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=config.epochs * updates_per_epoch,
        warmup_t=int(config.warmup_epochs * updates_per_epoch),
        warmup_lr_init=config.learning_rate() / 100,
        t_in_epochs=False,
    )
    smoothing = LabelSmoothingCrossEntropy(config.label_smoothing)

    def loss_fn(logits: Any, targets: Any) -> Any:
        keep = targets >= 0  # unreadable images carry -100
        return smoothing(logits[keep], targets[keep]) if keep.any() else logits.sum() * 0

    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and bf16_supported())
    fingerprint = {
        "base": artifacts.digest()[:24],
        "classes": list(train.classes),
        "samples": len(train) + len(val),
        **asdict(config),
    }
    fingerprint.pop("epochs")  # a resumed run may ask for more epochs
    if not resume:
        shutil.rmtree(checkpoints, ignore_errors=True)
    recorded = read_state(checkpoints)
    if recorded is not None and recorded.get("fingerprint") != fingerprint:
        raise TrainingError(
            f"{checkpoints} holds a checkpoint of a different run (other data, base or settings); "
            "use --no-resume to start over"
        )
    state = load_checkpoint(checkpoints, model, optimizer) or {
        "epoch": 0,
        "update": 0,
        "best": -1.0,
        "waited": 0,
        "history": [],
        "fingerprint": fingerprint,
    }
    history = state["history"]
    checkpoints.mkdir(parents=True, exist_ok=True)
    best_weights = checkpoints / "best.safetensors"
    for epoch in range(state["epoch"], config.epochs):
        # Seeded per epoch, so a resumed run shuffles and augments as an
        # uninterrupted one would.
        generator.manual_seed(config.seed * _EPOCH_SEED_STRIDE + epoch)
        torch.manual_seed(config.seed * _EPOCH_SEED_STRIDE + epoch)
        model.train()
        total, count = 0.0, 0
        optimizer.zero_grad()
        for step, (images, targets) in enumerate(loader):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                loss = loss_fn(model(images), targets) / config.grad_accumulation
            loss.backward()
            total += float(loss.detach()) * config.grad_accumulation
            count += 1
            if (step + 1) % config.grad_accumulation == 0 or step + 1 == len(loader):
                optimizer.step()
                optimizer.zero_grad()
                state["update"] += 1
                scheduler.step_update(state["update"])
            if progress:
                progress(
                    {
                        "stage": "training",
                        "epoch": epoch + 1,
                        "total_epochs": config.epochs,
                        "step": step + 1,
                        "steps": len(loader),
                        "loss": total / count,
                    }
                )
        model.eval()
        correct = seen = 0
        with torch.inference_mode():
            for images, targets in val_loader:
                keep = targets >= 0
                correct += int((model(images).argmax(1)[keep] == targets[keep]).sum())
                seen += int(keep.sum())
        accuracy = correct / seen if seen else float("nan")
        history.append(
            {
                "epoch": epoch + 1,
                "loss": total / max(count, 1),
                "val_accuracy": accuracy,
                "lr": optimizer.param_groups[0]["lr"],
                "time": time.time(),
            }
        )
        if progress:
            progress({"stage": "validated", **history[-1], "total_epochs": config.epochs})
        if accuracy > state["best"]:
            state["best"], state["waited"] = accuracy, 0
            save_weights(model, best_weights)
        else:
            state["waited"] += 1
        state["epoch"] = epoch + 1
        state["history"] = history
        save_checkpoint(checkpoints, model, optimizer, state)
        if state["waited"] >= config.patience:
            break
    if best_weights.is_file():
        load_weights(model, best_weights)
    return model.eval(), history
