"""Tiny models with random weights, built locally, for benchmarks and tests.

They exercise the real loading paths (a timm model folder in Hub layout, a
diffusers SD3 folder) without downloading anything; their scores mean nothing.
Never use them to moderate anything.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["random_timm_folder", "tiny_sd3_pipeline"]


def random_timm_folder(
    folder: Path,
    *,
    architecture: str = "vit_tiny_patch16_384",
    label_names: Sequence[str] = ("NSFW", "SFW"),
    seed: int = 0,
    model_args: dict[str, Any] | None = None,
) -> Path:
    """A timm model with random weights saved as a model folder (``config.json`` +
    ``model.safetensors``); the default is the seed model's architecture."""
    import timm
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(seed)
    model = timm.create_model(architecture, num_classes=len(label_names), **(model_args or {}))
    save_for_hf(
        model.eval(),
        str(folder),
        model_config={"label_names": list(label_names)},
        safe_serialization=True,
    )
    return Path(folder)


def _tokenizer(folder: Path):
    """A CLIP tokenizer from a small local vocabulary (no download)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    for char in [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789"):
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77
    )


def tiny_sd3_pipeline(folder: Path, num_layers: int = 1) -> Path:
    """An SD3 transformer of ``num_layers`` blocks, a tiny VAE and CLIP encoders, no
    T5, random weights: saved as a diffusers folder (``folder/pipeline``), which loads
    through the same code as real SD3.5 weights. (ControlNet residuals reach every
    block but the last, so ControlNet tests need 2.)"""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=16,
        num_layers=num_layers,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=16,
    )
    config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        pad_token_id=1,
        vocab_size=1000,
        hidden_act="gelu",
        projection_dim=32,
    )
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    tokenizer = _tokenizer(folder / "vocab")
    pipeline: Any = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=CLIPTextModelWithProjection(config),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(config),
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipeline.save_pretrained(folder / "pipeline")
    return folder / "pipeline"
