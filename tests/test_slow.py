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
