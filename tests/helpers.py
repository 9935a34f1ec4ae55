"""Builders for the models and images the tests need, all made locally."""

from __future__ import annotations

import hashlib
import io
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
