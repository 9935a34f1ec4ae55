"""Shared fixtures. Tests never touch the network: the Hub is offline and every
model is built and saved by the tests themselves."""

from __future__ import annotations

import os
import tempfile

# Must be set before huggingface_hub is imported anywhere.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Converted models and parity verdicts go to a throw-away cache, never the user's.
os.environ["PIXGUARD_CACHE_DIR"] = tempfile.mkdtemp(prefix="pixguard-test-cache-")

from pathlib import Path

import pytest

from tests.helpers import (
    build_trigger_vit_folder,
    build_vit_folder,
    install_in_hf_cache,
    sample_photos,
)

MARQO_REPO = "Marqo/nsfw-image-detection-384"


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """Real SFW photographs shipped inside scikit-image and scikit-learn."""
    return sample_photos()


@pytest.fixture(scope="session")
def tiny_vit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-block ViT at 64 px with random weights, in timm's Hub layout."""
    return build_vit_folder(
        tmp_path_factory.mktemp("tiny-vit"),
        model_args={"depth": 2, "img_size": 64},
        seed=0,
    )


#: Logit std of the int8 fixture's head on its calibration images: its scores span
#: about 0.45..0.6 on the parity inputs, on both sides of the threshold.
INT8_FIXTURE_LOGIT_STD = 0.25


@pytest.fixture(scope="session")
def int8_vit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-block ViT at 64 px whose int8 export passes the parity gate on any x86
    CPU: average-pooled, with a low-gain head along the embeddings' principal
    direction, so int8 rounding moves its scores well inside the tolerance."""
    return build_vit_folder(
        tmp_path_factory.mktemp("int8-vit"),
        model_args={"depth": 2, "img_size": 64, "global_pool": "avg"},
        seed=0,
        logit_std=INT8_FIXTURE_LOGIT_STD,
        principal_head=True,
    )


@pytest.fixture(scope="session")
def full_vit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full-size vit_tiny_patch16_384 (the seed model's architecture), random weights."""
    return build_vit_folder(tmp_path_factory.mktemp("full-vit"), model_args={}, seed=1)


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, private Hugging Face cache for this test."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def marqo_in_cache(hf_cache: Path, full_vit_folder: Path) -> Path:
    """The seed model's repo, as huggingface_hub would have cached it, holding a
    random full-size ViT (the real weights cannot be downloaded here)."""
    install_in_hf_cache(hf_cache, MARQO_REPO, full_vit_folder)
    return hf_cache


@pytest.fixture(scope="session")
def trigger_vit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ViT trained here to flag images holding the trigger checkerboard
    (tests/helpers.py): the fixture model for explanations, redaction and video."""
    return build_trigger_vit_folder(tmp_path_factory.mktemp("trigger-vit"))
