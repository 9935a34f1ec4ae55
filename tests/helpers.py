"""Builders for the models and images the tests need, all made locally."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from PIL import Image
from timm.models import save_for_hf

# A random head gives scores bunched at one value. The head is re-drawn along one
# random direction and scaled on synthetic calibration images, so scores on photos
# spread over (0, 1) and thresholds get exercised on both sides.
CALIBRATION_LOGIT_STD = 3.0


def sample_photos() -> list[Path]:
    import skimage
    import sklearn.datasets

    skimage_data = Path(skimage.__file__).parent / "data"
    sklearn_images = Path(sklearn.datasets.__file__).parent / "images"
    names = [
        skimage_data / "astronaut.png",
        skimage_data / "chelsea.png",
        skimage_data / "coffee.png",
        skimage_data / "rocket.jpg",
        skimage_data / "motorcycle_left.png",
        sklearn_images / "china.jpg",
        sklearn_images / "flower.jpg",
    ]
    return [path for path in names if path.is_file()]


def build_vit(model_args: dict[str, Any], seed: int, num_classes: int = 2) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(
        "vit_tiny_patch16_384", pretrained=False, num_classes=num_classes, **model_args
    )
    model.eval()
    size = model_args.get("img_size", 384)
    calibration = torch.stack(
        [
            _as_input(gradient_image(64 + 9 * i, 64 + 5 * i, seed=i).rotate(40 * i), size)
            for i in range(12)
        ]
    )
    with torch.no_grad():
        embeddings = model.forward_head(model.forward_features(calibration), pre_logits=True)
        direction = torch.randn(embeddings.shape[1])
        projection = embeddings @ direction
        scale = CALIBRATION_LOGIT_STD / projection.std()
        offset = -projection.mean() * scale
        # Class k gets logit coeff_k * (scaled projection); two classes: +1/2, -1/2.
        coeffs = torch.linspace(0.5, -0.5, num_classes)
        model.head.weight.copy_(torch.outer(coeffs, direction) * scale)
        model.head.bias.copy_(coeffs * offset)
    return model


def _as_input(image: Image.Image, size: int) -> torch.Tensor:
    array = np.asarray(
        image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), np.float32
    )
    return torch.from_numpy(((array / 255.0 - 0.5) / 0.5).transpose(2, 0, 1))


def build_vit_folder(
    folder: Path,
    *,
    model_args: dict[str, Any],
    seed: int,
    label_names: tuple[str, ...] = ("NSFW", "SFW"),
    pixguard: dict[str, Any] | None = None,
) -> Path:
    model = build_vit(model_args, seed, num_classes=len(label_names))
    config: dict[str, Any] = {"label_names": list(label_names)}
    if pixguard is not None:
        config["pixguard"] = pixguard
    save_for_hf(model, str(folder), model_config=config, safe_serialization=True)
    return folder


def install_in_hf_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """Lay ``folder`` out as huggingface_hub's cache does after a download."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        shutil.copy(file, snapshot / file.name)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def gradient_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    base = np.concatenate(
        [
            np.broadcast_to(x, (height, width, 1)),
            np.broadcast_to(y, (height, width, 1)),
            np.full((height, width, 1), 128, np.float32),
        ],
        axis=2,
    )
    noise = rng.normal(0, 12, size=base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


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


def build_tiny_sd3(folder: Path) -> Path:
    """1-layer SD3 transformer, tiny VAE and CLIP encoders, no T5: a diffusers folder."""
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
        num_layers=1,
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
    pipeline = StableDiffusion3Pipeline(
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
