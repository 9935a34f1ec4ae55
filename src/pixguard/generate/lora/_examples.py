"""The training examples, prepared once: each caption's prompt embeddings (then the
text encoders are freed), each image's aspect-ratio bucket, and its latents when
cached. Latents are kept per item, so shuffling can never pair an image's latents
with another image's caption."""

from __future__ import annotations

from typing import Any

from ...images import load_image
from ._config import LoraTrainConfig
from ._data import CaptionedImage, nearest_bucket

__all__ = ["Examples", "aspect_buckets", "encode_prompts", "free_text_encoders"]


def aspect_buckets(
    items: list[CaptionedImage], resolution: int, divisibility: int
) -> list[tuple[int, int]]:
    """Each image's (height, width) bucket: about ``resolution`` squared pixels, its
    sides multiples of ``divisibility``."""
    sizes = []
    for item in items:
        frame = load_image(item.path).frames[0]
        sizes.append(nearest_bucket(*frame.size, resolution, divisibility))
    return sizes


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


def encode_prompts(
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


def free_text_encoders(pipeline: Any) -> None:
    from diffusers.training_utils import free_memory

    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        if getattr(pipeline, name, None) is not None:
            setattr(pipeline, name, None)
    free_memory()
