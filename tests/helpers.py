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


def build_vit(
    model_args: dict[str, Any],
    seed: int,
    num_classes: int = 2,
    *,
    logit_std: float = CALIBRATION_LOGIT_STD,
    principal_head: bool = False,
) -> torch.nn.Module:
    """A random ViT whose head spreads scores with logit std ``logit_std`` on the
    calibration images. ``principal_head`` reads the embeddings' main direction of
    variation instead of a random one: the head then needs the least gain for that
    spread, so small errors in the features (int8 rounding) move the scores least."""
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
        direction = (
            torch.linalg.svd(embeddings - embeddings.mean(0), full_matrices=False).Vh[0]
            if principal_head
            else torch.randn(embeddings.shape[1])
        )
        projection = embeddings @ direction
        scale = logit_std / projection.std()
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
    logit_std: float = CALIBRATION_LOGIT_STD,
    principal_head: bool = False,
) -> Path:
    model = build_vit(
        model_args,
        seed,
        num_classes=len(label_names),
        logit_std=logit_std,
        principal_head=principal_head,
    )
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


def build_tiny_sd3_controlnet(folder: Path) -> Path:
    """A 1-layer SD3ControlNetModel matching the tiny transformer, as a diffusers
    folder. Its output projections start at zero (ControlNet's zero convolutions);
    they are drawn at random here so that the control visibly steers the image."""
    from diffusers import SD3ControlNetModel

    torch.manual_seed(2)
    controlnet = SD3ControlNetModel(
        sample_size=32,
        patch_size=1,
        in_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,
        caption_projection_dim=32,
        pooled_projection_dim=64,
        out_channels=16,
    )
    with torch.no_grad():
        for name, parameter in controlnet.named_parameters():
            if name.startswith(("controlnet_blocks", "pos_embed_input")):
                parameter.copy_(torch.randn_like(parameter) * 0.5)
    controlnet.save_pretrained(folder, safe_serialization=True)
    return folder


# The original (Stability AI) single-file layout, written from a diffusers folder,
# so loading through diffusers' converters can be checked against the folder.


def _swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _sd3_transformer_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    num_layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("transformer_blocks."))
    out = {
        "pos_embed": state["pos_embed.pos_embed"],
        "x_embedder.proj.weight": state["pos_embed.proj.weight"],
        "x_embedder.proj.bias": state["pos_embed.proj.bias"],
    }
    for p in ("weight", "bias"):
        for ours, theirs in (("timestep_embedder", "t_embedder"), ("text_embedder", "y_embedder")):
            out[f"{theirs}.mlp.0.{p}"] = state[f"time_text_embed.{ours}.linear_1.{p}"]
            out[f"{theirs}.mlp.2.{p}"] = state[f"time_text_embed.{ours}.linear_2.{p}"]
        out[f"context_embedder.{p}"] = state[f"context_embedder.{p}"]
        out[f"final_layer.linear.{p}"] = state[f"proj_out.{p}"]
        out[f"final_layer.adaLN_modulation.1.{p}"] = _swap_halves(state[f"norm_out.linear.{p}"])
        for i in range(num_layers):
            last = i == num_layers - 1
            ours, theirs = f"transformer_blocks.{i}", f"joint_blocks.{i}"
            out[f"{theirs}.x_block.attn.qkv.{p}"] = torch.cat(
                [state[f"{ours}.attn.to_{x}.{p}"] for x in "qkv"]
            )
            out[f"{theirs}.context_block.attn.qkv.{p}"] = torch.cat(
                [state[f"{ours}.attn.add_{x}_proj.{p}"] for x in "qkv"]
            )
            out[f"{theirs}.x_block.attn.proj.{p}"] = state[f"{ours}.attn.to_out.0.{p}"]
            out[f"{theirs}.x_block.adaLN_modulation.1.{p}"] = state[f"{ours}.norm1.linear.{p}"]
            context_norm = state[f"{ours}.norm1_context.linear.{p}"]
            out[f"{theirs}.context_block.adaLN_modulation.1.{p}"] = (
                _swap_halves(context_norm) if last else context_norm
            )
            out[f"{theirs}.x_block.mlp.fc1.{p}"] = state[f"{ours}.ff.net.0.proj.{p}"]
            out[f"{theirs}.x_block.mlp.fc2.{p}"] = state[f"{ours}.ff.net.2.{p}"]
            if not last:  # the last context block only feeds attention
                out[f"{theirs}.context_block.attn.proj.{p}"] = state[f"{ours}.attn.to_add_out.{p}"]
                out[f"{theirs}.context_block.mlp.fc1.{p}"] = state[
                    f"{ours}.ff_context.net.0.proj.{p}"
                ]
                out[f"{theirs}.context_block.mlp.fc2.{p}"] = state[f"{ours}.ff_context.net.2.{p}"]
    return out


_VAE_ATTENTION_NAMES = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def _vae_to_original(state: dict[str, torch.Tensor], num_blocks: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        coder, *rest = key.split(".")
        if rest[0] in ("down_blocks", "up_blocks"):
            # LDM numbers decoder levels from the bottom, diffusers from the top.
            level = int(rest[1]) if coder == "encoder" else num_blocks - 1 - int(rest[1])
            kind = "down" if coder == "encoder" else "up"
            tail = ".".join(rest[4:])
            name = (
                f"{coder}.{kind}.{level}.block.{rest[3]}.{tail}"
                if rest[2] == "resnets"
                else f"{coder}.{kind}.{level}.{kind}sample.{tail}"
            )
        elif rest[0] == "mid_block" and rest[1] == "resnets":
            name = f"{coder}.mid.block_{int(rest[2]) + 1}." + ".".join(rest[3:])
        elif rest[0] == "mid_block":
            name = f"{coder}.mid.attn_1.{_VAE_ATTENTION_NAMES['.'.join(rest[3:-1])]}.{rest[-1]}"
        else:
            name = key.replace("conv_norm_out", "norm_out")
        out[name.replace("conv_shortcut", "nin_shortcut")] = value
    return out


def save_sd3_single_file(pipeline_folder: Path, target: Path, with_clip_l: bool) -> Path:
    """Write ``pipeline_folder``'s transformer and VAE (and CLIP-L when asked) as one
    original-format ``.safetensors`` file."""
    from safetensors.torch import load_file, save_file

    weights = "diffusion_pytorch_model.safetensors"
    transformer = load_file(pipeline_folder / "transformer" / weights)
    vae = load_file(pipeline_folder / "vae" / weights)
    vae_config = json.loads((pipeline_folder / "vae" / "config.json").read_text())
    single = {
        f"model.diffusion_model.{k}": v
        for k, v in _sd3_transformer_to_original(transformer).items()
    } | {
        f"first_stage_model.{k}": v
        for k, v in _vae_to_original(vae, len(vae_config["down_block_types"])).items()
    }
    if with_clip_l:
        clip_l = load_file(pipeline_folder / "text_encoder" / "model.safetensors")
        single |= {f"text_encoders.clip_l.transformer.{k}": v for k, v in clip_l.items()}
    save_file({k: v.contiguous() for k, v in single.items()}, target)
    return target


def sd3_config_folder(pipeline_folder: Path, target: Path, drop: tuple[str, ...]) -> Path:
    """A copy of a diffusers folder with the weights of ``drop`` components removed:
    the config a single-file checkpoint loads with."""
    shutil.copytree(pipeline_folder, target)
    for component in drop:
        for weights in (target / component).glob("*.safetensors"):
            weights.unlink()
    return target


# A fixture model that responds to a known pattern: a tiny ViT trained here, for
# a few seconds, to call an image NSFW exactly when it holds the trigger patch
# below. Explanations are validated against where the trigger was pasted.
TRIGGER_INPUT_SIZE = 64
TRIGGER_PATCH = 8
TRIGGER_EMBED_DIM = 64
TRIGGER_INPUT_SIDE = 16  # the trigger's side in training images
_TRIGGER_COLOURS = ((255, 0, 255), (0, 255, 0))


def trigger_image(side: int) -> Image.Image:
    """A magenta/green checkerboard of 4 x 4 squares, ``side`` pixels square."""
    cells = np.indices((4, 4)).sum(axis=0) % 2
    pixels = np.asarray(_TRIGGER_COLOURS, np.uint8)[cells]
    return Image.fromarray(pixels).resize((side, side), Image.Resampling.NEAREST)


def neutral_image(size: int, seed: int) -> Image.Image:
    """A smooth background with a few plain rectangles (distractors), no trigger."""
    rng = np.random.default_rng(seed)
    image = gradient_image(size, size, seed=seed).rotate(float(rng.uniform(0, 360)))
    pixels = np.asarray(image).copy()
    for _ in range(int(rng.integers(0, 4))):
        w, h = (int(v) for v in rng.integers(size // 8, size // 3, size=2))
        x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        pixels[y : y + h, x : x + w] = rng.integers(40, 200, size=3)
    return Image.fromarray(pixels)


def paste_trigger(image: Image.Image, left: int, top: int, side: int) -> Image.Image:
    out = image.copy()
    out.paste(trigger_image(side), (left, top))
    return out


def build_trigger_vit_folder(folder: Path, *, steps: int = 200, seed: int = 0) -> Path:
    """Train a 2-block ViT (64 px input, 8 px patches: an 8 x 8 grid) so that the
    ``NSFW`` class wins exactly when the trigger is in the image.

    Training images are made at the model's input size: neutral backgrounds, and
    in half of them the trigger (TRIGGER_INPUT_SIDE px) pasted at a random place.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = timm.create_model(
        "vit_tiny_patch16_384",
        pretrained=False,
        num_classes=2,
        img_size=TRIGGER_INPUT_SIZE,
        patch_size=TRIGGER_PATCH,
        depth=2,
        embed_dim=TRIGGER_EMBED_DIM,
        num_heads=2,
    )
    size, side = TRIGGER_INPUT_SIZE, TRIGGER_INPUT_SIDE
    backgrounds = np.stack([np.asarray(neutral_image(size, seed=1000 + i)) for i in range(128)])
    trigger = np.asarray(trigger_image(side))

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = backgrounds[rng.integers(len(backgrounds), size=n)].copy()
        positive = rng.integers(2, size=n).astype(bool)
        for k in np.flatnonzero(positive):
            x, y = (int(v) for v in rng.integers(0, size - side + 1, size=2))
            images[k, y : y + side, x : x + side] = trigger
        x = (torch.from_numpy(images).float().permute(0, 3, 1, 2) / 255.0 - 0.5) / 0.5
        return x, torch.from_numpy((~positive).astype(np.int64))  # label 0 is NSFW

    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        x, y = batch(32)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    # The tests' images are square: no crop.
    model.pretrained_cfg = {**model.pretrained_cfg, "crop_pct": 1.0}
    config = {"label_names": ["NSFW", "SFW"]}
    save_for_hf(model, str(folder), model_config=config, safe_serialization=True)
    return folder


def write_clip(
    path: Path,
    frames: list[Image.Image],
    *,
    fps: int = 10,
    codec: str = "libx264",
    audio: bool = False,
) -> Path:
    """Encode ``frames`` as a video with PyAV (container from the suffix)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p" if codec != "mjpeg" else "yuvj420p"
        if audio:
            container.add_stream("aac", rate=16000)
        for image in frames:
            frame = av.VideoFrame.from_image(image)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    import av

    rate = 16000
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=rate)
        samples = np.zeros((1, 1024), np.float32)
        for i in range(int(seconds * rate / 1024)):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
