"""LoRA training for SD3/SD3.5, after diffusers' ``train_dreambooth_lora_sd3.py``,
built from the library: peft's LoRA on the transformer's attention projections,
the flow-matching loss with logit-normal timestep sampling
(``diffusers.training_utils``), diffusers' LoRA file format.

Prompts are encoded once and the text encoders freed. Latents, when cached, are
kept per item, so shuffling can never pair an image's latents with another
image's caption.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..._exceptions import TrainingError
from ..._files import file_sha256, write_json_atomic
from ...classify import Classifier
from ...images import load_image
from ...models import DEFAULT_MODEL
from .._gate import SafetyGate
from .._generator import pick_device, write_gated_png
from .._loading import load_pipeline
from ._checkpoint import TrainLog, load_checkpoint, plot_losses, save_checkpoint
from ._data import (
    BatchPlan,
    CaptionedImage,
    ScreeningReport,
    load_captioned_images,
    nearest_bucket,
    screen_images,
)

__all__ = ["LoraTrainConfig", "LoraTrainResult", "train_lora"]

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
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
#: Generated sizes must be multiples of 16 (the VAE's factor 8 times the patch size 2).
_MIN_DIVISIBILITY = 16

Progress = Callable[[dict[str, Any]], None]


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


def _fingerprint(items: list[CaptionedImage], variant: str, config: LoraTrainConfig) -> str:
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


class Examples:
    """The training examples on the device side: each item's prompt embeddings and
    latents, always looked up by item, never by position in a cache."""

    def __init__(
        self,
        items: list[CaptionedImage],
        buckets: list[tuple[int, int]],
        embeddings: dict[str, tuple[Any, Any]],
        vae: Any,
        *,
        device: str,
        cache_latents: bool,
    ) -> None:
        self.items = items
        self.buckets = buckets
        self.embeddings = embeddings
        self.vae = vae
        self.device = device
        self._cache: dict[int, Any] = {}
        if cache_latents:
            for index in range(len(items)):
                self._cache[index] = self._encode([index]).cpu()

    def _pixels(self, index: int) -> Any:
        import numpy as np
        import torch
        from PIL import Image, ImageOps

        height, width = self.buckets[index]
        frame = load_image(self.items[index].path).frames[0]
        fitted = ImageOps.fit(frame, (width, height), method=Image.Resampling.BICUBIC)
        array = np.asarray(fitted, dtype=np.float32) / 127.5 - 1.0
        return torch.from_numpy(array.transpose(2, 0, 1))

    def _encode(self, indices: list[int]) -> Any:
        """The VAE's latent distribution parameters (mean and log-variance)."""
        import torch

        pixels = torch.stack([self._pixels(i) for i in indices]).to(self.device, self.vae.dtype)
        with torch.no_grad():
            return self.vae.encode(pixels).latent_dist.parameters

    def batch(self, indices: list[int], generator: Any) -> tuple[Any, Any, Any]:
        """(latents, prompt embeddings, pooled embeddings) for these items, the latents
        sampled from each item's distribution with ``generator``."""
        import torch
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        if self._cache:
            parameters = torch.cat([self._cache[i] for i in indices]).to(self.device)
        else:
            parameters = self._encode(indices)
        latents = DiagonalGaussianDistribution(parameters.float().cpu()).sample(generator)
        config = self.vae.config
        latents = (latents - (config.shift_factor or 0.0)) * config.scaling_factor
        embeds = [self.embeddings[self.items[i].caption] for i in indices]
        return (
            latents.to(self.device),
            torch.cat([e[0] for e in embeds]).to(self.device),
            torch.cat([e[1] for e in embeds]).to(self.device),
        )


def flow_matching_loss(
    transformer: Any,
    scheduler: Any,
    latents: Any,
    prompt_embeds: Any,
    pooled: Any,
    generator: Any,
    *,
    logit_mean: float,
    logit_std: float,
    autocast: Any,
) -> Any:
    """The SD3 rectified-flow loss, timesteps drawn logit-normally (SD3 paper)."""
    import torch
    from diffusers.training_utils import (
        compute_density_for_timestep_sampling,
        compute_loss_weighting_for_sd3,
    )

    scheme = "logit_normal"
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    u = compute_density_for_timestep_sampling(
        scheme, latents.shape[0], logit_mean=logit_mean, logit_std=logit_std, generator=generator
    )
    indices = (u * scheduler.config.num_train_timesteps).long()
    timesteps = scheduler.timesteps[indices].to(latents.device)
    sigmas = scheduler.sigmas[indices].to(latents.device, latents.dtype)
    sigmas = sigmas.reshape(-1, *([1] * (latents.ndim - 1)))
    noisy = (1.0 - sigmas) * latents + sigmas * noise
    device_type = latents.device.type
    with torch.autocast(device_type, dtype=autocast or torch.float32, enabled=autocast is not None):
        prediction = transformer(
            hidden_states=noisy,
            timestep=timesteps,
            encoder_hidden_states=prompt_embeds,
            pooled_projections=pooled,
            return_dict=False,
        )[0]
    weighting = compute_loss_weighting_for_sd3(scheme, sigmas=sigmas)
    target = noise - latents
    squared = weighting.float() * (prediction.float() - target.float()) ** 2
    return squared.reshape(latents.shape[0], -1).mean(dim=1).mean()


def _step_generator(seed: int, micro_batch: int) -> Any:
    """One generator per micro-batch, so a resumed run draws the same noise."""
    import torch

    return torch.Generator("cpu").manual_seed(seed * 1_000_003 + micro_batch)


def _encode_prompts(
    pipeline: Any, prompts: list[str], device: str, config: LoraTrainConfig
) -> dict[str, tuple[Any, Any]]:
    import torch

    encoded = {}
    with torch.no_grad():
        for prompt in dict.fromkeys(prompts):
            embeds, _, pooled, _ = pipeline.encode_prompt(
                prompt=prompt,
                prompt_2=None,
                prompt_3=None,
                device=device,
                do_classifier_free_guidance=False,
                max_sequence_length=config.max_sequence_length,
            )
            encoded[prompt] = (embeds.cpu(), pooled.cpu())
    return encoded


def _free_text_encoders(pipeline: Any) -> None:
    from diffusers.training_utils import free_memory

    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        if getattr(pipeline, name, None) is not None:
            setattr(pipeline, name, None)
    free_memory()


def _add_lora(transformer: Any, config: LoraTrainConfig) -> None:
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
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
    from diffusers.training_utils import cast_training_params
    from peft.utils import get_peft_model_state_dict

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
    embeddings = _encode_prompts(pipeline, prompts + validation_prompts, target, config)
    _free_text_encoders(pipeline)

    scale = pipeline.vae_scale_factor * transformer.config.patch_size
    divisibility = max(_MIN_DIVISIBILITY, scale)
    buckets = []
    for item in items:
        frame = load_image(item.path).frames[0]
        buckets.append(nearest_bucket(*frame.size, config.resolution, divisibility))
    examples = Examples(
        items, buckets, embeddings, vae, device=target, cache_latents=config.cache_latents
    )
    plan = BatchPlan(buckets, config.batch_size, config.seed)

    with torch.random.fork_rng():  # a seeded LoRA initialisation, the caller's RNG untouched
        torch.manual_seed(config.seed)
        _add_lora(transformer, config)
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
    fingerprint = _fingerprint(items, os.fspath(variant), config)
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
                generator = _step_generator(config.seed, number)
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
                results = _validate(
                    pipeline, gate, embeddings, config, loaded.variant, step, output
                )
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

    lora_layers = get_peft_model_state_dict(transformer)
    StableDiffusion3Pipeline.save_lora_weights(
        output,
        transformer_lora_layers={k: v.detach().float().cpu() for k, v in lora_layers.items()},
        transformer_lora_adapter_metadata=transformer.peft_config["default"].to_dict(),
    )
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


def _validate(
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


def _alpha_option(config: LoraTrainConfig) -> dict[str, Any]:
    """peft annotates ``lora_alpha`` as int, but scales by ``lora_alpha / r`` in
    floating point: fractional alphas are meant, and passed as they are."""
    return {"lora_alpha": config.alpha if config.alpha is not None else config.rank}
