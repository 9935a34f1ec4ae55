"""LoRA training for SD3/SD3.5, after diffusers' ``train_dreambooth_lora_sd3.py``,
built from the library: peft's LoRA on the transformer's attention projections
(:mod:`._adapter`), the flow-matching loss with logit-normal timestep sampling
(:mod:`._loss`), examples prepared once (:mod:`._examples`), and this module's
training loop with its checkpoints, log and validation images.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..._exceptions import TrainingError
from ..._files import write_json_atomic
from ...classify import Classifier
from ...models import DEFAULT_MODEL
from .._gate import SafetyGate
from .._generator import pick_device
from .._loading import load_pipeline
from ._adapter import LORA_WEIGHTS, attach_lora, save_lora
from ._checkpoint import TrainLog, load_checkpoint, plot_losses, run_fingerprint, save_checkpoint
from ._config import LoraTrainConfig, LoraTrainResult
from ._data import BatchPlan, load_captioned_images, screen_images
from ._examples import Examples, aspect_buckets, encode_prompts, free_text_encoders
from ._loss import flow_matching_loss, step_generator
from ._validation import validate

__all__ = ["train_lora"]

#: Generated sizes must be multiples of 16 (the VAE's factor 8 times the patch size 2).
_MIN_DIVISIBILITY = 16

Progress = Callable[[dict[str, Any]], None]


def _precision(requested: str, device: str) -> tuple[Any, Any]:
    """(dtype of the frozen weights, autocast dtype or None)."""
    import torch

    if requested == "auto":
        if device == "cuda":
            requested = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            requested = "fp32"
    if requested == "fp16" and device != "cuda":
        raise TrainingError("fp16 training needs a CUDA GPU; use bf16 or fp32 here")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[requested]
    return dtype, None if dtype == torch.float32 else dtype


def train_lora(
    data: str | os.PathLike[str],
    *,
    variant: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: LoraTrainConfig | None = None,
    model_config: str | os.PathLike[str] | None = None,
    safety_model: str | os.PathLike[str] = DEFAULT_MODEL,
    classifier: Classifier | None = None,
    allow_flagged: bool = False,
    resume: bool = True,
    device: str = "auto",
    progress: Progress | None = None,
) -> LoraTrainResult:
    """Train a LoRA for an SD3/SD3.5 ``variant`` (a registry name, a diffusers folder,
    or a single file with ``model_config``) on captioned images, and write
    ``output/pytorch_lora_weights.safetensors`` in diffusers' format.

    Every training image is screened by the safety classifier first; flagged images
    stop the run (:class:`FlaggedTrainingDataError`) unless ``allow_flagged``.
    Validation images pass the fail-closed gate. Checkpoints go to
    ``output/checkpoint`` every ``checkpoint_every`` steps; calling again with the
    same data and settings resumes from the latest (``resume=False`` starts afresh).
    """
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.training_utils import cast_training_params

    config = config or LoraTrainConfig()
    output = Path(output)
    notify = progress or (lambda event: None)
    items = load_captioned_images(data)
    safety = classifier or Classifier.load(safety_model)
    gate = SafetyGate(safety, action="block")  # refuses an open gate before any work
    notify({"stage": "screening", "images": len(items)})
    screening = screen_images(items, safety, allow_flagged=allow_flagged)
    output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output / "screening.json", screening.to_dict())

    target = pick_device(device)
    weight_dtype, autocast = _precision(config.precision, target)
    loaded = load_pipeline(
        variant, config=model_config, torch_dtype=weight_dtype, drop_t5=config.drop_t5
    )
    pipeline = loaded.pipeline
    pipeline.to(target)
    pipeline.set_progress_bar_config(disable=True)
    transformer, vae = pipeline.transformer, pipeline.vae
    vae.requires_grad_(False)

    notify({"stage": "encoding", "images": len(items)})
    prompts = [item.caption for item in items]
    validation_prompts = [config.validation_prompt, ""] if config.validation_prompt else []
    embeddings = encode_prompts(pipeline, prompts + validation_prompts, target, config)
    free_text_encoders(pipeline)

    scale = pipeline.vae_scale_factor * transformer.config.patch_size
    divisibility = max(_MIN_DIVISIBILITY, scale)
    sizes = aspect_buckets(items, config.resolution, divisibility)
    examples = Examples(
        items, sizes, embeddings, vae, device=target, cache_latents=config.cache_latents
    )
    plan = BatchPlan(sizes, config.batch_size, config.seed)

    with torch.random.fork_rng():  # a seeded LoRA initialisation, the caller's RNG untouched
        torch.manual_seed(config.seed)
        attach_lora(transformer, config)
    if weight_dtype != torch.float32:
        cast_training_params(transformer, dtype=torch.float32)
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    parameters = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if weight_dtype == torch.float16 else None
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipeline.scheduler.config)

    checkpoints = output / "checkpoint"
    fingerprint = run_fingerprint(items, os.fspath(variant), config)
    state = None
    if resume:
        state = load_checkpoint(checkpoints, transformer, optimizer, fingerprint=fingerprint)
    else:
        import shutil

        shutil.rmtree(checkpoints, ignore_errors=True)
    start = state["step"] if state else 0
    if start > config.steps:
        raise TrainingError(
            f"the checkpoint is at step {start}, past --steps {config.steps}",
            source=str(checkpoints),
        )
    log = TrainLog(output / "train.log", keep_until=start if state else None)
    validation: list[dict[str, Any]] = []
    began = time.perf_counter()
    losses = [r["loss"] for r in log.records() if "loss" in r]
    try:
        for step in range(start + 1, config.steps + 1):
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for micro in range(config.grad_accumulation):
                number = (step - 1) * config.grad_accumulation + micro
                generator = step_generator(config.seed, number)
                latents, embeds, pooled = examples.batch(plan.batch(number), generator)
                loss = flow_matching_loss(
                    transformer,
                    scheduler,
                    latents,
                    embeds.to(weight_dtype),
                    pooled.to(weight_dtype),
                    generator,
                    logit_mean=config.logit_mean,
                    logit_std=config.logit_std,
                    autocast=autocast,
                )
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"the loss became {loss.item()} at step {step}; lower --lr or use fp32"
                    )
                scaled = loss / config.grad_accumulation
                (scaler.scale(scaled) if scaler else scaled).backward()
                total += float(loss.detach()) / config.grad_accumulation
            if scaler:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            losses.append(total)
            record = {
                "step": step,
                "loss": total,
                "lr": optimizer.param_groups[0]["lr"],
                "epoch": ((step - 1) * config.grad_accumulation) // plan.batches_per_epoch,
                "elapsed_s": round(time.perf_counter() - began, 3),
            }
            log.write(record)
            notify({"stage": "training", **record, "steps": config.steps})
            due = config.validation_every and step % config.validation_every == 0
            if config.validation_prompt and (due or step == config.steps):
                results = validate(pipeline, gate, embeddings, config, loaded.variant, step, output)
                validation.append({"step": step, "images": results})
                log.write({"step": step, "validation": results})
                notify({"stage": "validation", "step": step, "images": results})
                transformer.train()
            if step % config.checkpoint_every == 0 or step == config.steps:
                weights = {n: p for n, p in transformer.named_parameters() if p.requires_grad}
                save_checkpoint(
                    checkpoints,
                    step,
                    weights,
                    optimizer,
                    {"fingerprint": fingerprint, "config": asdict(config)},
                )
    finally:
        log.close()

    save_lora(transformer, output)
    plot_losses(log.records(), output / "loss.png")
    write_json_atomic(
        output / "training.json",
        {
            "variant": os.fspath(variant),
            "steps": config.steps,
            "resumed_from": start,
            "config": asdict(config),
            "weights": LORA_WEIGHTS,
        },
    )
    return LoraTrainResult(
        output=output,
        weights=output / LORA_WEIGHTS,
        steps=config.steps,
        resumed_from=start,
        losses=losses,
        screening=screening,
        validation=validation,
    )
