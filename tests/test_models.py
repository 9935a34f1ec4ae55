"""The registry and the model-folder contract."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pixguard import (
    Classifier,
    ModelConfigError,
    ModelNotFoundError,
    ModelSpec,
    Preprocessing,
    UnsafeWeightsError,
    get_model_spec,
    list_models,
    register_model,
)
from pixguard.models import DEFAULT_MODEL, model_status, spec_from_config
from tests.helpers import build_vit_folder


def test_registry_holds_the_seed_and_the_bundled_model():
    names = [spec.name for spec in list_models()]
    assert DEFAULT_MODEL == "marqo-nsfw-384"
    assert {"marqo-nsfw-384", "opennsfw"} <= set(names)
    marqo = get_model_spec("marqo-nsfw-384")
    assert marqo.location == "Marqo/nsfw-image-detection-384"
    assert marqo.architecture == "vit_tiny_patch16_384"
    assert marqo.nsfw_indices == (0,)
    assert marqo.preprocessing.input_size == (3, 384, 384)
    opennsfw = get_model_spec("opennsfw")
    assert opennsfw.source == "bundled" and opennsfw.embedding_dim == 1024
    assert model_status(opennsfw) == "bundled"


def test_status_reflects_the_hub_cache(hf_cache, marqo_in_cache):
    assert model_status(get_model_spec("marqo-nsfw-384")) == "cached"


def test_status_missing_when_not_cached(hf_cache):
    assert model_status(get_model_spec("marqo-nsfw-384")) == "missing"


def test_registering_twice_needs_replace():
    spec = ModelSpec(
        name="test-dup",
        source="local-dir",
        location="/nowhere",
        loader="timm",
        architecture="vit_tiny_patch16_384",
        preprocessing=Preprocessing(input_size=(3, 64, 64)),
        label_names=("sfw", "nsfw"),
        nsfw_labels=("nsfw",),
    )
    register_model(spec)
    with pytest.raises(ValueError, match="already registered"):
        register_model(spec)
    register_model(spec, replace=True)
    assert get_model_spec("test-dup") is spec


def test_spec_rejects_nsfw_labels_outside_the_labels():
    with pytest.raises(ValueError, match="nsfw_labels"):
        ModelSpec(
            name="bad",
            source="local-dir",
            location="/x",
            loader="timm",
            architecture="a",
            preprocessing=Preprocessing(input_size=(3, 8, 8)),
            label_names=("a", "b"),
            nsfw_labels=("c",),
        )


def _config(**overrides):
    config = {
        "architecture": "vit_tiny_patch16_384",
        "num_classes": 3,
        "pretrained_cfg": {
            "input_size": [3, 384, 384],
            "interpolation": "bicubic",
            "crop_pct": 0.9,
            "mean": [0.5] * 3,
            "std": [0.5] * 3,
        },
        "label_names": ["drawing", "porn", "neutral"],
        "pixguard": {"nsfw_labels": ["porn"], "threshold": 0.3},
    }
    config.update(overrides)
    return config


def test_config_fields_drive_the_spec():
    spec = spec_from_config(_config(), name="m", source="local-dir", location="/m")
    assert spec.label_names == ("drawing", "porn", "neutral")
    assert spec.nsfw_indices == (1,)
    assert spec.threshold == 0.3
    assert spec.preprocessing.crop_pct == 0.9
    assert spec.preprocessing.resize_size == (426, 426)


def test_label_names_as_an_index_mapping():
    config = _config(label_names={"1": "porn", "0": "drawing", "2": "neutral"})
    assert spec_from_config(config, name="m", source="local-dir", location="/m").label_names == (
        "drawing",
        "porn",
        "neutral",
    )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"label_names": None}, "label_names"),
        ({"num_classes": 2}, "num_classes"),
        ({"pixguard": {"nsfw_labels": ["gore"]}}, "nsfw_labels"),
        ({"pixguard": {}}, "which of the labels"),
        ({"architecture": None, "pixguard": {"nsfw_labels": ["porn"]}}, "architecture"),
    ],
)
def test_invalid_configs_are_clear_errors(overrides, match):
    config = _config(**overrides)
    if overrides.get("architecture", "") is None:
        del config["architecture"]
    with pytest.raises(ModelConfigError, match=match):
        spec_from_config(config, name="m", source="local-dir", location="/m")


def test_nsfw_label_is_inferred_only_when_unambiguous():
    config = _config(label_names=["SFW", "NSFW", "other"], pixguard={})
    assert spec_from_config(config, name="m", source="local-dir", location="/m").nsfw_labels == (
        "NSFW",
    )


def test_multiple_nsfw_labels_add_up(tmp_path):
    folder = build_vit_folder(
        tmp_path / "three",
        model_args={"depth": 1, "img_size": 32},
        seed=2,
        label_names=("neutral", "porn", "hentai"),
        pixguard={"nsfw_labels": ["porn", "hentai"], "threshold": 0.4},
    )
    classifier = Classifier.load(folder)
    assert classifier.threshold == 0.4
    result = classifier.classify(np.full((40, 40, 3), 90, np.uint8))
    p = result.probabilities
    assert result.nsfw_score == pytest.approx(p["porn"] + p["hentai"], abs=1e-6)


def test_pickle_only_folders_are_refused_without_unpickling(tiny_vit_folder, tmp_path, monkeypatch):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(tiny_vit_folder / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(UnsafeWeightsError, match="never unpickles") as info:
        Classifier.load(folder)
    assert info.value.code == "model_unsafe_weights"


def test_folder_errors(tmp_path):
    with pytest.raises(ModelNotFoundError):
        Classifier.load(tmp_path / "absent")
    (tmp_path / "noconfig").mkdir()
    with pytest.raises(ModelConfigError, match=r"config\.json"):
        Classifier.load(tmp_path / "noconfig")
    bad = tmp_path / "badjson"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ModelConfigError, match="parse"):
        Classifier.load(bad)


def test_folder_config_round_trips_pixguard_fields(tiny_vit_folder, tmp_path):
    folder = tmp_path / "policy"
    shutil.copytree(tiny_vit_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config["pixguard"] = {"nsfw_labels": ["NSFW"], "threshold": 0.8}
    (folder / "config.json").write_text(json.dumps(config))
    classifier = Classifier.load(folder)
    assert classifier.threshold == 0.8
    assert classifier.spec.source == "local-dir"
    assert Path(classifier.spec.location) == folder.resolve()
