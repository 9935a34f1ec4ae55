"""Decoding and preprocessing: the bottom layer, which never imports a model."""

from ._decode import SUPPORTED_FORMATS, DecodedImage, ImageInput, describe_source, load_image
from ._limits import DecodeLimits
from ._preprocess import Preprocessing, preprocess, preprocess_batch
from ._suffixes import IMAGE_SUFFIXES

__all__ = [
    "IMAGE_SUFFIXES",
    "SUPPORTED_FORMATS",
    "DecodeLimits",
    "DecodedImage",
    "ImageInput",
    "Preprocessing",
    "describe_source",
    "load_image",
    "preprocess",
    "preprocess_batch",
]
