"""The public surface: __all__, the exception tree and its stable codes."""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest

import pixguard
from pixguard import _exceptions

EXPECTED_CODES = {
    "PixguardError": "pixguard_error",
    "ImageError": "image_error",
    "ImageNotFoundError": "image_not_found",
    "ImageUnreadableError": "image_unreadable",
    "EmptyImageError": "image_empty",
    "TruncatedImageError": "image_truncated",
    "NotAnImageError": "image_not_an_image",
    "UnsupportedFormatError": "image_unsupported_format",
    "ImageTooLargeError": "image_too_large",
    "TooManyPixelsError": "image_too_many_pixels",
    "InvalidImageInputError": "image_invalid_input",
    "ImageDecodeError": "image_decode_failed",
    "ModelError": "model_error",
    "ModelNotFoundError": "model_not_found",
    "ModelNotCachedError": "model_not_cached",
    "ModelConfigError": "model_config_invalid",
    "UnsafeWeightsError": "model_unsafe_weights",
    "ModelLoadError": "model_load_failed",
    "InferenceError": "inference_failed",
    "RuntimeUnavailableError": "runtime_unavailable",
    "ParityError": "parity_failed",
    "ExportError": "export_failed",
    "IndexStoreError": "index_error",
    "DatasetError": "dataset_invalid",
    "FlaggedTrainingDataError": "dataset_flagged",
    "GenerationError": "generation_invalid",
    "PromptRefusedError": "prompt_refused",
    "InputImageRefusedError": "input_image_refused",
    "TrainingError": "training_failed",
    "IndexModelMismatchError": "index_model_mismatch",
    "IndexEntryNotFoundError": "index_entry_not_found",
    "PolicyError": "policy_error",
    "InvalidThresholdError": "threshold_invalid",
    "ExplanationError": "explanation_failed",
    "VideoError": "video_error",
    "VideoDecodeError": "video_decode_failed",
    "UnsupportedCodecError": "video_unsupported_codec",
    "EmptyVideoError": "video_empty",
    "NoVideoStreamError": "video_no_video_stream",
    "VideoTooLargeError": "video_too_large",
    "VideoTooLongError": "video_too_long",
    "VideoTooManyPixelsError": "video_too_many_pixels",
    "VideoTooManyFramesError": "video_too_many_frames",
    "PolicyNotFoundError": "policy_not_found",
    "PolicyInvalidError": "policy_invalid",
    "PolicyLabelError": "policy_label_unknown",
    "ReviewError": "review_error",
    "ReviewItemNotFoundError": "review_item_not_found",
    "ReviewConflictError": "review_conflict",
    "ReviewInvalidError": "review_invalid",
    "ScanError": "scan_invalid",
}


def test_error_codes_are_stable_and_unique():
    errors = {
        name: obj
        for name, obj in vars(_exceptions).items()
        if inspect.isclass(obj) and issubclass(obj, pixguard.PixguardError)
    }
    assert {name: cls.code for name, cls in errors.items()} == EXPECTED_CODES
    assert len(set(EXPECTED_CODES.values())) == len(EXPECTED_CODES)


def test_image_errors_share_one_base():
    for name, code in EXPECTED_CODES.items():
        cls = getattr(pixguard, name)
        if code.startswith("image_"):
            assert issubclass(cls, pixguard.ImageError)
        if code.startswith("model_"):
            assert issubclass(cls, pixguard.ModelError)


def test_error_to_dict_names_the_source():
    error = pixguard.EmptyImageError("the input is empty", source="a.jpg")
    assert error.to_dict() == {"code": "image_empty", "message": "a.jpg: the input is empty"}


@pytest.mark.parametrize(
    "module",
    [
        "pixguard",
        "pixguard._exceptions",
        "pixguard.images",
        "pixguard.models",
        "pixguard.runtimes",
        "pixguard.classify",
        "pixguard.export",
        "pixguard.generate",
        "pixguard.generate.lora",
        "pixguard.index",
        "pixguard.serve",
        "pixguard.train",
        "pixguard.cli",
        "pixguard.policy",
        "pixguard.review",
        "pixguard.testing",
    ],
)
def test_all_lists_exactly_what_exists(module):
    mod = importlib.import_module(module)
    assert len(mod.__all__) == len(set(mod.__all__))
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.__all__ names missing {name}"


def test_public_names_do_not_leak_private_modules():
    public = {name for name in dir(pixguard) if not name.startswith("_")}
    assert public - set(pixguard.__all__) <= {
        "classify",
        "cli",
        "export",
        "generate",
        "images",
        "index",
        "models",
        "policy",
        "review",
        "runtimes",
        "scale",
        "serve",
        "testing",
        "train",
    }


def test_importing_pixguard_does_not_load_heavy_runtimes():
    import subprocess
    import sys

    code = (
        "import sys, pixguard, pixguard.cli;"
        "print(sorted(m for m in ('torch', 'timm', 'onnxruntime') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_benchmarks_use_only_the_public_api():
    """bench/ scripts import pixguard's public modules (and pixguard.testing for tiny
    models), never private modules or the tests' helpers."""
    import ast
    from pathlib import Path

    for script in (Path(__file__).parents[1] / "bench").glob("*.py"):
        for node in ast.walk(ast.parse(script.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                parts = name.split(".")
                assert parts[0] != "tests", f"{script.name} imports {name}"
                if parts[0] == "pixguard":
                    assert not any(p.startswith("_") for p in parts[1:]), f"{script.name}: {name}"


def test_random_timm_folder_loads_as_a_model_folder(tmp_path):
    from pixguard.testing import random_timm_folder

    folder = random_timm_folder(
        tmp_path / "m", label_names=("nsfw", "sfw"), model_args={"depth": 1, "img_size": 32}
    )
    classifier = pixguard.Classifier.load(folder, runtime="torch")
    assert classifier.spec.label_names == ("nsfw", "sfw")
    assert 0.0 <= classifier.classify(np.zeros((40, 40, 3), np.uint8)).nsfw_score <= 1.0
