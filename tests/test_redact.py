"""Region blur (`Classifier.redact`, `pixguard redact`) and the gate's blur scope."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pixguard import Classifier
from pixguard.cli import app
from pixguard.generate import SafetyGate
from tests.helpers import neutral_image, paste_trigger

SIZE, TRIGGER = 128, 32
LEFT, TOP = 80, 16  # the trigger's place in the flagged image


@pytest.fixture(scope="module")
def classifier(trigger_vit_folder: Path) -> Classifier:
    return Classifier.load(trigger_vit_folder, runtime="torch")


@pytest.fixture
def flagged() -> Image.Image:
    return paste_trigger(neutral_image(SIZE, seed=8000), LEFT, TOP, TRIGGER)


def _changed(before: Image.Image, after: Image.Image) -> np.ndarray:
    difference = np.abs(np.asarray(before, np.int16) - np.asarray(after, np.int16))
    return difference.max(axis=2) > 0


class Broken:
    name = "grad-cam"

    def heat(self, batch):
        raise RuntimeError("no gradients today")


def test_region_blur_covers_the_trigger_and_keeps_the_rest_sharp(classifier, flagged):
    redaction = classifier.redact([flagged])[0]
    assert redaction.action == "region"
    assert redaction.nsfw_score >= classifier.threshold
    assert redaction.redacted_score < classifier.threshold
    changed = _changed(flagged, redaction.image)
    assert changed[TOP : TOP + TRIGGER, LEFT : LEFT + TRIGGER].mean() > 0.9
    # Much of the image, away from the trigger, is untouched.
    assert 0 < redaction.region_fraction < 0.6
    assert 1 - changed.mean() > 0.3


def test_images_below_the_threshold_come_back_unchanged(classifier):
    image = neutral_image(SIZE, seed=8001)
    redaction = classifier.redact([image])[0]
    assert redaction.action == "unchanged"
    assert not _changed(image, redaction.image).any()


def test_whole_image_is_blurred_when_the_region_blur_is_not_enough(classifier, flagged):
    # A blur this faint leaves the trigger recognisable: the re-check still flags it.
    redaction = classifier.redact([flagged], strength=0.001)[0]
    assert redaction.action == "whole"
    assert redaction.redacted_score >= classifier.threshold
    assert "still above the threshold" in redaction.reason


def test_whole_image_is_blurred_when_the_explanation_fails(trigger_vit_folder, flagged):
    classifier = Classifier.load(trigger_vit_folder, runtime="torch")
    classifier._heatmap_method = Broken()
    redaction = classifier.redact([flagged])[0]
    assert redaction.action == "whole"
    assert "explanation failed" in redaction.reason
    changed = _changed(flagged, redaction.image)
    assert changed[80:, :48].mean() > 0.5  # far from the trigger too


def test_an_unreadable_input_has_an_error_and_no_output(classifier, flagged):
    bad, good = classifier.redact([b"not an image", flagged])
    assert bad.error.code == "image_not_an_image"
    assert bad.image is None
    assert good.action == "region"


def test_cli_redact_writes_every_readable_input(trigger_vit_folder, tmp_path, flagged):
    inputs = tmp_path / "in"
    inputs.mkdir()
    flagged.save(inputs / "flagged.png")
    neutral_image(SIZE, seed=8002).save(inputs / "plain.png")
    (inputs / "broken.png").write_bytes(b"nope")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "redact",
            str(inputs),
            "--output",
            str(out),
            "--model",
            str(trigger_vit_folder),
            "--runtime",
            "torch",
            "--strength",
            "0.1",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 1, result.output  # broken.png
    rows = {Path(r["path"]).name: r for r in json.loads(result.stdout)}
    assert rows["flagged.png"]["action"] == "region"
    assert rows["plain.png"]["action"] == "unchanged"
    assert rows["broken.png"]["error"]["code"] == "image_not_an_image"
    assert rows["broken.png"]["output"] is None
    with Image.open(out / "flagged.png") as written:
        assert _changed(flagged, written.convert("RGB"))[TOP : TOP + TRIGGER, LEFT:].any()
    assert sorted(p.name for p in out.iterdir()) == ["flagged.png", "plain.png"]


def test_gate_blur_scope_region_blurs_only_the_region(classifier, flagged):
    region = SafetyGate(classifier, action="blur", blur_scope="region").check([flagged])[0]
    whole = SafetyGate(classifier, action="blur").check([flagged])[0]
    assert region.decision == whole.decision == "blurred"
    assert "region blur" in region.reason
    assert 1 - _changed(flagged, region.image).mean() > 0.3
    assert _changed(flagged, whole.image).mean() > 0.9


def test_gate_region_scope_fails_closed_to_whole(trigger_vit_folder, flagged):
    classifier = Classifier.load(trigger_vit_folder, runtime="torch")
    classifier._heatmap_method = Broken()
    decision = SafetyGate(classifier, action="blur", blur_scope="region").check([flagged])[0]
    assert decision.decision == "blurred"
    assert "whole blur" in decision.reason
    assert _changed(flagged, decision.image)[80:, :48].mean() > 0.5


def test_gate_rejects_an_unknown_blur_scope(classifier):
    with pytest.raises(ValueError, match="blur scope"):
        SafetyGate(classifier, action="blur", blur_scope="partial")  # type: ignore[arg-type]
