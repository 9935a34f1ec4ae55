"""Fine-tune a timm model on labelled images: a linear probe on cached embeddings,
or full fine-tuning. The result is a model folder that loads everywhere."""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._exceptions import DatasetError, ImageError, TrainingError
from .._files import file_sha256, write_json_atomic
from .._sqlite import connect, transaction
from ..classify import Classifier
from ..images import DecodeLimits, load_image, preprocess
from ..models import resolve_model
from ..runtimes import ModelArtifacts
from ..runtimes._cache import cache_root
from ._data import Dataset, load_dataset
from ._evaluate import nsfw_truth
from ._metrics import report, save_curves

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune"]

logger = logging.getLogger(__name__)
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


@dataclass
class FinetuneResult:
    folder: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _bf16_supported() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class EmbeddingCache:
    """Embeddings keyed by (model weights digest, file sha256) in SQLite, so probe
    re-runs and sweeps skip the backbone entirely."""

    def __init__(self, path: Path) -> None:
        self._db = connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (model TEXT, sha256 TEXT, vector BLOB, PRIMARY KEY (model, sha256))"
        )

    def get(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found = {}
        for digest in set(hashes):
            row = self._db.execute(
                "SELECT vector FROM embeddings WHERE model = ? AND sha256 = ?", (model, digest)
            ).fetchone()
            if row is not None:
                found[digest] = np.frombuffer(row[0], dtype=np.float32).copy()
        return found

    def put(self, model: str, items: dict[str, np.ndarray]) -> None:
        with transaction(self._db):
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                [(model, d, v.astype(np.float32).tobytes()) for d, v in items.items()],
            )

    def close(self) -> None:
        self._db.close()


def _sha256(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None  # unreadable: skipped like any bad image


def _embeddings(
    classifier: Classifier, dataset: Dataset, model_key: str, progress: Progress | None
) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, kept sample indices): cached ones are reused, the rest computed once."""
    cache = EmbeddingCache(cache_root() / "embeddings.db")
    try:
        hashes = [_sha256(path) for path in dataset.paths]
        known = cache.get(model_key, [h for h in hashes if h])
        missing = [i for i, h in enumerate(hashes) if h and h not in known]
        fresh: dict[str, np.ndarray] = {}
        for done, (i, prediction) in enumerate(
            zip(missing, classifier.iter_predict([dataset.paths[i] for i in missing]), strict=True)
        ):
            if prediction.ok and prediction.embedding is not None:
                fresh[hashes[i]] = prediction.embedding
            if progress and done % 16 == 0:
                progress({"stage": "embedding", "done": done, "total": len(missing)})
        if fresh:
            cache.put(model_key, fresh)
        known.update(fresh)
    finally:
        cache.close()
    kept = np.array([i for i, h in enumerate(hashes) if h and h in known], dtype=np.int64)
    if not len(kept):
        raise DatasetError("no image of the dataset could be read")
    return np.stack([known[hashes[i]] for i in kept]), kept


def _probe(
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
    steps_per_epoch = 50
    best, best_state, history, waited = -1.0, None, [], 0
    for epoch in range(config.epochs):
        for _ in range(steps_per_epoch):
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


def _save_checkpoint(folder: Path, model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    """Weights and optimizer tensors in safetensors, the rest in JSON: no pickle."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / ".model.tmp")
    )
    optimizer_state = optimizer.state_dict()
    tensors = {
        f"{index}.{name}": value.contiguous()
        for index, slots in optimizer_state["state"].items()
        for name, value in slots.items()
    }
    save_file(tensors, str(folder / ".optimizer.tmp"))
    (folder / ".model.tmp").replace(folder / "model.safetensors")
    (folder / ".optimizer.tmp").replace(folder / "optimizer.safetensors")
    write_json_atomic(
        folder / "state.json", {**state, "param_groups": optimizer_state["param_groups"]}
    )


def _load_checkpoint(folder: Path, model: Any, optimizer: Any) -> dict[str, Any] | None:
    from safetensors.torch import load_file

    if not (folder / "state.json").is_file():
        return None
    state = json.loads((folder / "state.json").read_text())
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    slots: dict[int, dict[str, Any]] = {}
    for key, value in load_file(str(folder / "optimizer.safetensors")).items():
        index, name = key.split(".", 1)
        slots.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": state.pop("param_groups")})
    return state


def _full(
    artifacts: ModelArtifacts,
    train: Dataset,
    val: Dataset,
    config: FinetuneConfig,
    checkpoints: Path,
    progress: Progress | None,
    *,
    resume: bool,
) -> tuple[Any, list[dict[str, Any]]]:
    import shutil

    import torch
    from timm.data import create_transform, resolve_model_data_config
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.scheduler import CosineLRScheduler

    model = artifacts.reference().model  # type: ignore[attr-defined]
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
    loader = torch.utils.data.DataLoader(
        _Images(train, train_tf, pp, True),
        batch_size=config.batch_size,
        shuffle=True,
        generator=generator,
    )
    val_loader = torch.utils.data.DataLoader(
        _Images(val, None, pp, False), batch_size=config.batch_size
    )
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

    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and _bf16_supported())
    fingerprint = {
        "base": artifacts.digest()[:24],
        "classes": list(train.classes),
        "samples": len(train) + len(val),
        **asdict(config),
    }
    fingerprint.pop("epochs")  # a resumed run may ask for more epochs
    if not resume:
        shutil.rmtree(checkpoints, ignore_errors=True)
    recorded = (
        json.loads((checkpoints / "state.json").read_text())
        if (checkpoints / "state.json").is_file()
        else None
    )
    if recorded is not None and recorded.get("fingerprint") != fingerprint:
        raise TrainingError(
            f"{checkpoints} holds a checkpoint of a different run (other data, base or settings); "
            "use --no-resume to start over"
        )
    state = _load_checkpoint(checkpoints, model, optimizer) or {
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
        generator.manual_seed(config.seed * 100_003 + epoch)
        torch.manual_seed(config.seed * 100_003 + epoch)
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
            from safetensors.torch import save_file

            state["best"], state["waited"] = accuracy, 0
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(best_weights))
        else:
            state["waited"] += 1
        state["epoch"] = epoch + 1
        state["history"] = history
        _save_checkpoint(checkpoints, model, optimizer, state)
        if state["waited"] >= config.patience:
            break
    if best_weights.is_file():
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(best_weights)))
    return model.eval(), history


def finetune(
    data: str | Path,
    *,
    base: str,
    output: str | Path,
    nsfw_classes: Sequence[str],
    config: FinetuneConfig | None = None,
    val: str | Path | None = None,
    resume: bool = True,
    progress: Progress | None = None,
) -> FinetuneResult:
    """Train on ``data`` from ``base`` and write a model folder to ``output``.

    ``nsfw_classes`` are the dataset classes that count as NSFW. Validation is a
    stratified split of ``data`` (``config.val_fraction``) unless ``val`` is given.
    Full fine-tuning keeps checkpoints in ``output/checkpoint`` and, with
    ``resume``, continues from them after an interruption.
    """
    import torch
    from timm.models import save_for_hf

    config = config or FinetuneConfig()
    _seed_everything(config.seed)
    dataset = load_dataset(data)
    if val is not None:
        train, validation = dataset, load_dataset(val)
        if validation.classes != dataset.classes:
            raise DatasetError(
                f"validation classes {list(validation.classes)} differ from {list(dataset.classes)}"
            )
    else:
        train, validation = dataset.split(config.val_fraction, seed=config.seed)
    truth_all = nsfw_truth(dataset, nsfw_classes)  # validates the names
    if truth_all.all():
        raise DatasetError("every class is marked NSFW; leave at least one safe class")
    if not len(validation) or not len(train):
        raise DatasetError(
            "the split leaves no training or no validation images; add images or use --val"
        )
    spec = resolve_model(base)
    artifacts = ModelArtifacts(spec)
    if artifacts.loader != "timm":
        raise TrainingError(
            "fine-tuning needs a timm model (safetensors) as the base", source=spec.name
        )
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)

    if config.mode == "linear":
        classifier = Classifier.load(base, runtime="torch")
        model_key = f"{spec.name}:{artifacts.digest()[:24]}"
        combined = Dataset(train.samples + validation.samples, dataset.classes)
        is_val = np.r_[np.zeros(len(train), bool), np.ones(len(validation), bool)]
        x, kept = _embeddings(classifier, combined, model_key, progress)
        targets, in_val = combined.targets[kept], is_val[kept]
        head, history = _probe(
            x[~in_val],
            targets[~in_val],
            x[in_val],
            targets[in_val],
            len(dataset.classes),
            config,
            progress,
        )
        model = artifacts.reference().model  # type: ignore[attr-defined]
        model.reset_classifier(len(dataset.classes))
        with torch.no_grad():
            model.get_classifier().weight.copy_(head.weight)
            model.get_classifier().bias.copy_(head.bias)
    elif config.mode == "full":
        model, history = _full(
            artifacts, train, validation, config, output / "checkpoint", progress, resume=resume
        )
    else:
        raise TrainingError(f"unknown mode {config.mode!r} (use linear or full)")

    own = {
        "nsfw_labels": list(nsfw_classes),
        "threshold": config.threshold,
        "finetune": {"base": spec.name, **asdict(config)},
    }
    save_for_hf(
        model.eval(),
        str(output),
        model_config={"label_names": list(dataset.classes), "pixguard": own},
        safe_serialization=True,
    )
    trained = Classifier.load(output, runtime="torch")
    truth = nsfw_truth(validation, nsfw_classes)
    scores = np.array([p.nsfw_score if p.ok else np.nan for p in trained.predict(validation.paths)])
    keep = np.isfinite(scores)
    metrics = {
        "mode": config.mode,
        "base": spec.name,
        "train_samples": len(train),
        "val_samples": int(keep.sum()),
        "history": history,
        **report(truth[keep], scores[keep], config.threshold),
    }
    predictions = trained.predict(validation.paths)
    labels = [
        p.probabilities and max(p.probabilities, key=p.probabilities.get) for p in predictions
    ]
    metrics["val_class_accuracy"] = float(
        np.mean([lab == s.label for lab, s in zip(labels, validation.samples, strict=True)])
    )
    save_curves(
        truth[keep],
        scores[keep],
        output,
        threshold=config.threshold,
        title=f"{config.mode} fine-tune",
    )
    write_json_atomic(output / "metrics.json", metrics)
    # A finished run needs no checkpoint; a re-run starts afresh.
    shutil.rmtree(output / "checkpoint", ignore_errors=True)
    with (output / "train.log").open("w", encoding="utf-8") as log:
        for row in history:
            log.write(json.dumps(row) + "\n")
    return FinetuneResult(output, metrics, history)
