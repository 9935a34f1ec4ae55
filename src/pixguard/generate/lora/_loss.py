"""One training step's loss: SD3's rectified flow with logit-normal timesteps
(``diffusers.training_utils``), its noise drawn from a generator per micro-batch."""

from __future__ import annotations

from typing import Any

__all__ = ["flow_matching_loss", "step_generator"]


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


def step_generator(seed: int, micro_batch: int) -> Any:
    """One generator per micro-batch, so a resumed run draws the same noise."""
    import torch

    return torch.Generator("cpu").manual_seed(seed * 1_000_003 + micro_batch)
