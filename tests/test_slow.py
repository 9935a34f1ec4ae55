"""Real weights from the Hugging Face Hub. Marked slow: never run in CI (which is
offline); run with `pytest -m slow` on a machine that can reach the Hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixguard import Classifier

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"

pytestmark = pytest.mark.slow


def test_real_seed_model_classifies_safe_photos_as_sfw(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    classifier = Classifier.load("marqo-nsfw-384")
    assert classifier.spec.label_names[0] == "NSFW"
    assert classifier.embedding_dim == 192
    for prediction in classifier.predict(sorted(EXAMPLES.glob("*.[jp][pn]g"))):
        assert prediction.label == "sfw"
        assert prediction.nsfw_score < 0.2


def test_real_sd35_medium_generates_a_gated_image(monkeypatch, tmp_path):
    """The gated Hub repo (log in or set HF_TOKEN first); without T5 to fit in less
    memory. A GPU makes this minutes instead of much longer."""
    from huggingface_hub import constants
    from PIL import Image

    from pixguard.generate import Generator

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    generator = Generator.load(
        "sd3.5-medium", safety_model="opennsfw", drop_t5=True, safety_action="block"
    )
    (first,) = generator(
        "a watercolour of a lighthouse at dusk",
        seed=11,
        steps=8,
        width=512,
        height=512,
        output_dir=tmp_path,
    )
    assert first.gate.decision == "allowed"
    assert first.gate.nsfw_score < 0.5
    written = Image.open(first.path)
    assert written.size == (512, 512)
    assert "Model: sd3.5-medium" in written.text["parameters"]
