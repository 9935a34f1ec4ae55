"""The one exception tree of pixguard.

Every error carries a stable ``code`` string. The CLI prints it, the HTTP service maps
it to a status code, and JSON output carries it, so scripts can branch on ``code``
without parsing messages.

    PixguardError
    ├── ImageError                      (bad input image; affects that input only)
    │   ├── ImageNotFoundError          image_not_found
    │   ├── ImageUnreadableError        image_unreadable
    │   ├── EmptyImageError             image_empty
    │   ├── TruncatedImageError         image_truncated
    │   ├── NotAnImageError             image_not_an_image
    │   ├── UnsupportedFormatError      image_unsupported_format
    │   ├── ImageTooLargeError          image_too_large
    │   ├── TooManyPixelsError          image_too_many_pixels
    │   ├── InvalidImageInputError      image_invalid_input
    │   ├── ImageDecodeError            image_decode_failed
    │   └── VideoError                  video_error
    │       ├── VideoDecodeError        video_decode_failed
    │       ├── UnsupportedCodecError   video_unsupported_codec
    │       ├── EmptyVideoError         video_empty
    │       ├── NoVideoStreamError      video_no_video_stream
    │       ├── VideoTooLargeError      video_too_large
    │       ├── VideoTooLongError       video_too_long
    │       ├── VideoTooManyPixelsError video_too_many_pixels
    │       └── VideoTooManyFramesError video_too_many_frames
    ├── ModelError
    │   ├── ModelNotFoundError          model_not_found
    │   ├── ModelNotCachedError         model_not_cached
    │   ├── ModelConfigError            model_config_invalid
    │   ├── UnsafeWeightsError          model_unsafe_weights
    │   └── ModelLoadError              model_load_failed
    ├── InferenceError                  inference_failed
    ├── ExplanationError                explanation_failed
    ├── RuntimeUnavailableError         runtime_unavailable
    ├── ParityError                     parity_failed
    ├── ExportError                     export_failed
    ├── DatasetError                    dataset_invalid
    │   └── FlaggedTrainingDataError    dataset_flagged
    ├── TrainingError                   training_failed
    ├── GenerationError                 generation_invalid
    │   ├── PromptRefusedError          prompt_refused
    │   └── InputImageRefusedError      input_image_refused
    ├── IndexStoreError                 index_error
    │   ├── IndexModelMismatchError     index_model_mismatch
    │   └── IndexEntryNotFoundError     index_entry_not_found
    ├── PolicyError
    │   ├── InvalidThresholdError       threshold_invalid
    │   ├── PolicyNotFoundError         policy_not_found
    │   ├── PolicyInvalidError          policy_invalid
    │   └── PolicyLabelError            policy_label_unknown
    ├── ReviewError                     review_error
    │   ├── ReviewItemNotFoundError     review_item_not_found
    │   ├── ReviewConflictError         review_conflict
    │   └── ReviewInvalidError          review_invalid
    └── ScanError                       scan_invalid
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DatasetError",
    "EmptyImageError",
    "EmptyVideoError",
    "ExplanationError",
    "ExportError",
    "FlaggedTrainingDataError",
    "GenerationError",
    "ImageDecodeError",
    "ImageError",
    "ImageNotFoundError",
    "ImageTooLargeError",
    "ImageUnreadableError",
    "IndexEntryNotFoundError",
    "IndexModelMismatchError",
    "IndexStoreError",
    "InferenceError",
    "InputImageRefusedError",
    "InvalidImageInputError",
    "InvalidThresholdError",
    "ModelConfigError",
    "ModelError",
    "ModelLoadError",
    "ModelNotCachedError",
    "ModelNotFoundError",
    "NoVideoStreamError",
    "NotAnImageError",
    "ParityError",
    "PixguardError",
    "PolicyError",
    "PolicyInvalidError",
    "PolicyLabelError",
    "PolicyNotFoundError",
    "PromptRefusedError",
    "ReviewConflictError",
    "ReviewError",
    "ReviewInvalidError",
    "ReviewItemNotFoundError",
    "RuntimeUnavailableError",
    "ScanError",
    "TooManyPixelsError",
    "TrainingError",
    "TruncatedImageError",
    "UnsafeWeightsError",
    "UnsupportedCodecError",
    "UnsupportedFormatError",
    "VideoDecodeError",
    "VideoError",
    "VideoTooLargeError",
    "VideoTooLongError",
    "VideoTooManyFramesError",
    "VideoTooManyPixelsError",
]


class PixguardError(Exception):
    """Base of every error pixguard raises on purpose."""

    code: str = "pixguard_error"

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.source = source

    def __str__(self) -> str:
        if self.source is not None:
            return f"{self.source}: {self.message}"
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": str(self)}


class ImageError(PixguardError):
    """An input image could not be used. Affects that input only, never a whole batch."""

    code = "image_error"


class ImageNotFoundError(ImageError):
    code = "image_not_found"


class ImageUnreadableError(ImageError):
    code = "image_unreadable"


class EmptyImageError(ImageError):
    code = "image_empty"


class TruncatedImageError(ImageError):
    code = "image_truncated"


class NotAnImageError(ImageError):
    code = "image_not_an_image"


class UnsupportedFormatError(ImageError):
    code = "image_unsupported_format"


class ImageTooLargeError(ImageError):
    """The encoded input is larger than the configured byte limit."""

    code = "image_too_large"


class TooManyPixelsError(ImageError):
    """The decoded image would exceed the pixel limit (decompression-bomb guard)."""

    code = "image_too_many_pixels"


class InvalidImageInputError(ImageError):
    """The Python object given as an image is of an unsupported type or shape."""

    code = "image_invalid_input"


class ImageDecodeError(ImageError):
    """The decoder failed on data it had identified as an image."""

    code = "image_decode_failed"


class VideoError(ImageError):
    """A video input could not be used. Affects that input only."""

    code = "video_error"


class VideoDecodeError(VideoError):
    """The container or a stream is corrupt or truncated."""

    code = "video_decode_failed"


class UnsupportedCodecError(VideoError):
    code = "video_unsupported_codec"


class EmptyVideoError(VideoError):
    """The video stream holds no frame (zero length)."""

    code = "video_empty"


class NoVideoStreamError(VideoError):
    """The file has no video stream (audio only, or subtitles)."""

    code = "video_no_video_stream"


class VideoTooLargeError(VideoError):
    """The file is larger than the configured byte limit."""

    code = "video_too_large"


class VideoTooLongError(VideoError):
    code = "video_too_long"


class VideoTooManyPixelsError(VideoError):
    """The frame size exceeds the resolution limit."""

    code = "video_too_many_pixels"


class VideoTooManyFramesError(VideoError):
    code = "video_too_many_frames"


class ModelError(PixguardError):
    code = "model_error"


class ModelNotFoundError(ModelError):
    code = "model_not_found"


class ModelNotCachedError(ModelError):
    """The model lives on the Hub, is not cached, and the Hub cannot be reached."""

    code = "model_not_cached"


class ModelConfigError(ModelError):
    code = "model_config_invalid"


class UnsafeWeightsError(ModelError):
    """Only pickle-based weights were found; pixguard never unpickles."""

    code = "model_unsafe_weights"


class ModelLoadError(ModelError):
    code = "model_load_failed"


class InferenceError(PixguardError):
    code = "inference_failed"


class ExplanationError(PixguardError):
    """No heatmap could be computed for an input (its prediction may still stand)."""

    code = "explanation_failed"


class RuntimeUnavailableError(PixguardError):
    """The requested runtime or precision cannot run this model on this machine."""

    code = "runtime_unavailable"


class ParityError(PixguardError):
    """A faster path's scores strayed from fp32 eager beyond the parity gate."""

    code = "parity_failed"


class ExportError(PixguardError):
    code = "export_failed"


class DatasetError(PixguardError):
    """A labelled dataset (folder or manifest) cannot be used."""

    code = "dataset_invalid"


class FlaggedTrainingDataError(DatasetError):
    """The safety classifier flagged training images (or could not screen them);
    ``flagged`` names each file with its score (None when it could not be scored)."""

    code = "dataset_flagged"

    def __init__(
        self, message: str, *, flagged: list[tuple[str, float | None]], source: str | None = None
    ) -> None:
        listing = "; ".join(
            f"{path} ({'not scored' if score is None else f'nsfw {score:.3f}'})"
            for path, score in flagged
        )
        super().__init__(f"{message}: {listing}", source=source)
        self.flagged = flagged


class TrainingError(PixguardError):
    code = "training_failed"


class GenerationError(PixguardError):
    """Generation parameters or the generation model cannot be used."""

    code = "generation_invalid"


class PromptRefusedError(GenerationError):
    """The prompt matched the configured screening list; nothing was computed."""

    code = "prompt_refused"


class InputImageRefusedError(GenerationError):
    """The safety classifier flagged an input image (a ControlNet control image), or
    could not score it; nothing was generated."""

    code = "input_image_refused"


class IndexStoreError(PixguardError):
    """An embedding index cannot be opened, read or written."""

    code = "index_error"


class IndexModelMismatchError(IndexStoreError):
    """Embeddings of another model or size were offered to an index."""

    code = "index_model_mismatch"


class IndexEntryNotFoundError(IndexStoreError):
    code = "index_entry_not_found"


class PolicyError(PixguardError):
    code = "policy_error"


class InvalidThresholdError(PolicyError):
    code = "threshold_invalid"


class PolicyNotFoundError(PolicyError):
    """The policy file does not exist or cannot be read."""

    code = "policy_not_found"


class PolicyInvalidError(PolicyError):
    """The policy file is not a valid policy (TOML, keys, bands, or it allows everything)."""

    code = "policy_invalid"


class PolicyLabelError(PolicyError):
    """A per-label rule names a label the model does not have."""

    code = "policy_label_unknown"


class ReviewError(PixguardError):
    """The review queue cannot do what was asked."""

    code = "review_error"


class ReviewItemNotFoundError(ReviewError):
    """No queued item (or decision) with that id or sha256."""

    code = "review_item_not_found"


class ReviewConflictError(ReviewError):
    """The item is not in a state that allows this: claimed by another reviewer,
    already decided, or its image bytes are gone."""

    code = "review_conflict"


class ReviewInvalidError(ReviewError):
    """A decision, limit or export target that is not valid."""

    code = "review_invalid"


class ScanError(PixguardError):
    """A scan cannot start or resume: bad sources, or an output folder it must not touch."""

    code = "scan_invalid"
