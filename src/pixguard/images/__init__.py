"""Decoding and preprocessing: the bottom layer, which never imports a model."""

from ._decode import SUPPORTED_FORMATS, DecodedImage, ImageInput, describe_source, load_image
from ._limits import DecodeLimits
from ._preprocess import Preprocessing, crop_box, preprocess, preprocess_batch
from ._suffixes import IMAGE_SUFFIXES
from ._video import (
    VIDEO_CODECS,
    VIDEO_SUFFIXES,
    VideoFrame,
    VideoInput,
    VideoLimits,
    VideoReader,
    VideoSampling,
    is_video_path,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "SUPPORTED_FORMATS",
    "VIDEO_CODECS",
    "VIDEO_SUFFIXES",
    "DecodeLimits",
    "DecodedImage",
    "ImageInput",
    "Preprocessing",
    "VideoFrame",
    "VideoInput",
    "VideoLimits",
    "VideoReader",
    "VideoSampling",
    "crop_box",
    "describe_source",
    "is_video_path",
    "load_image",
    "preprocess",
    "preprocess_batch",
]
