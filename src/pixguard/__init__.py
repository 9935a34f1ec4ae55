"""pixguard: self-hosted image safety.

>>> from pixguard import Classifier
>>> classifier = Classifier.load("opennsfw")          # doctest: +SKIP
>>> classifier.predict(["photo.jpg"])[0].nsfw_score   # doctest: +SKIP
"""

from ._exceptions import (
    DatasetError,
    EmptyImageError,
    ExportError,
    ImageDecodeError,
    ImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    ImageUnreadableError,
    IndexEntryNotFoundError,
    IndexModelMismatchError,
    IndexStoreError,
    InferenceError,
    InvalidImageInputError,
    InvalidThresholdError,
    ModelConfigError,
    ModelError,
    ModelLoadError,
    ModelNotCachedError,
    ModelNotFoundError,
    NotAnImageError,
    ParityError,
    PixguardError,
    PolicyError,
    RuntimeUnavailableError,
    TooManyPixelsError,
    TrainingError,
    TruncatedImageError,
    UnsafeWeightsError,
    UnsupportedFormatError,
)
from ._version import __version__
from .classify import Classifier, Prediction
from .images import DecodeLimits, Preprocessing
from .models import DEFAULT_MODEL, ModelSpec, get_model_spec, list_models, register_model

__all__ = [
    "DEFAULT_MODEL",
    "Classifier",
    "DatasetError",
    "DecodeLimits",
    "EmptyImageError",
    "ExportError",
    "ImageDecodeError",
    "ImageError",
    "ImageNotFoundError",
    "ImageTooLargeError",
    "ImageUnreadableError",
    "IndexEntryNotFoundError",
    "IndexModelMismatchError",
    "IndexStoreError",
    "InferenceError",
    "InvalidImageInputError",
    "InvalidThresholdError",
    "ModelConfigError",
    "ModelError",
    "ModelLoadError",
    "ModelNotCachedError",
    "ModelNotFoundError",
    "ModelSpec",
    "NotAnImageError",
    "ParityError",
    "PixguardError",
    "PolicyError",
    "Prediction",
    "Preprocessing",
    "RuntimeUnavailableError",
    "TooManyPixelsError",
    "TrainingError",
    "TruncatedImageError",
    "UnsafeWeightsError",
    "UnsupportedFormatError",
    "__version__",
    "get_model_spec",
    "list_models",
    "register_model",
]
