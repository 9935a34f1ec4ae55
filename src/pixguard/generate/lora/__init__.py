"""LoRA training for Stable Diffusion 3.5, with pixguard's safety screening on the
training images and its gate on the validation images."""

from ._adapter import LORA_WEIGHTS
from ._config import LoraTrainConfig, LoraTrainResult
from ._data import CaptionedImage, ScreeningReport, load_captioned_images, screen_images
from ._train import train_lora

__all__ = [
    "LORA_WEIGHTS",
    "CaptionedImage",
    "LoraTrainConfig",
    "LoraTrainResult",
    "ScreeningReport",
    "load_captioned_images",
    "screen_images",
    "train_lora",
]
