"""ControlNet on the tests' tiny random SD3 pipeline, with a tiny random
SD3ControlNetModel built here: it changes the output, scale 0 gives the image
without control, control images are screened, results pass the gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixguard import Classifier, GenerationError, InputImageRefusedError, UnsafeWeightsError
from pixguard.generate import Generator
from pixguard.testing import tiny_sd3_pipeline
from tests.helpers import build_tiny_sd3_controlnet, gradient_image

ARGS = {"steps": 2, "width": 32, "height": 32, "guidance": 5.0}


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory) -> Path:
    # Two blocks: ControlNet residuals are added to every block but the last one.
    return tiny_sd3_pipeline(tmp_path_factory.mktemp("sd3"), num_layers=2)


@pytest.fixture(scope="module")
def tiny_controlnet(tmp_path_factory) -> Path:
    return build_tiny_sd3_controlnet(tmp_path_factory.mktemp("controlnet"))


@pytest.fixture(scope="module")
def generator(tiny_sd3, tiny_vit_folder) -> Generator:
    # Threshold 1.0 lets every output through; the gate demands the explicit opt-out.
    classifier = Classifier.load(tiny_vit_folder, runtime="torch", threshold=1.0)
    return Generator.load(tiny_sd3, classifier=classifier, safety_action="allow-flagged")


@pytest.fixture(scope="module")
def control_photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("control") / "control.png"
    gradient_image(32, 32, seed=3).rotate(30).save(path)
    return path


def _pixels(result) -> np.ndarray:
    return np.asarray(result.image, dtype=np.float32)


@pytest.mark.parametrize("kind", ["canny", "blur", "depth"])
def test_control_changes_the_output_and_scale_zero_restores_it(
    generator, tiny_controlnet, control_photo, kind
):
    plain = _pixels(generator("a cat", seed=4, **ARGS)[0])
    control = {"control": kind, "control_image": control_photo, "control_model": tiny_controlnet}
    guided = generator("a cat", seed=4, **control, **ARGS)[0]
    assert np.abs(_pixels(guided) - plain).mean() > 1.0
    again = generator("a cat", seed=4, **control, **ARGS)[0]
    np.testing.assert_array_equal(_pixels(again), _pixels(guided))  # same seed, same image
    muted = generator("a cat", seed=4, control_scale=0.0, **control, **ARGS)[0]
    assert np.abs(_pixels(muted) - plain).max() <= 1.0  # one 8-bit level at most


def test_results_pass_the_gate(generator, tiny_controlnet, control_photo, tiny_vit_folder):
    result = generator(
        "a cat",
        seed=5,
        control="canny",
        control_image=control_photo,
        control_model=tiny_controlnet,
        **ARGS,
    )[0]
    scorer = Classifier.load(tiny_vit_folder, runtime="torch")
    assert result.gate.model == str(tiny_vit_folder)
    assert result.gate.nsfw_score == pytest.approx(
        scorer.classify(result.image).nsfw_score, abs=1e-6
    )


def test_a_flagged_control_image_is_refused_before_compute(
    tiny_sd3, tiny_vit_folder, tiny_controlnet, control_photo
):
    strict = Classifier.load(tiny_vit_folder, runtime="torch", threshold=0.0)  # flags everything
    generator = Generator.load(tiny_sd3, classifier=strict)
    calls = []
    generator.pipeline.transformer.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(InputImageRefusedError, match="refused this input image") as error:
        generator(
            "a cat",
            control="blur",
            control_image=control_photo,
            control_model=tiny_controlnet,
            **ARGS,
        )
    assert error.value.source == str(control_photo)
    assert calls == []


def test_control_maps():
    from pixguard.generate._control import blur_map, canny_map, control_condition

    square = Image.new("RGB", (64, 64), "black")
    square.paste((255, 255, 255), (16, 16, 48, 48))
    edges = np.asarray(canny_map(square).convert("L"))
    assert set(np.unique(edges)) == {0, 255}
    assert edges[16:48, 16].max() == 255 or edges[16:48, 15].max() == 255  # the left side
    assert edges[30:34, 30:34].max() == 0  # nothing inside the flat square
    assert edges[:8, :8].max() == 0  # nor outside it
    blurred = np.asarray(blur_map(square), dtype=np.float32)
    assert 0 < blurred[16, 32, 0] < 255  # the edge is soft now
    condition = control_condition("canny", square, 64, 64)
    # Stability's canny ControlNet takes edges scaled to x * 127.5 + 0.5.
    assert set(np.unique(condition.numpy().round(3))) == {0.5, 128.0}
    with pytest.raises(GenerationError, match="unknown control"):
        control_condition("pose", square, 64, 64)


def test_control_mistakes_are_typed_errors(generator, tiny_controlnet, control_photo, tmp_path):
    import torch

    with pytest.raises(GenerationError, match="needs a control image"):
        generator("a cat", control="canny", **ARGS)
    with pytest.raises(GenerationError, match="needs --control"):
        generator("a cat", control_image=control_photo, **ARGS)
    with pytest.raises(GenerationError, match="unknown control"):
        generator("a cat", control="pose", control_image=control_photo, **ARGS)
    with pytest.raises(GenerationError, match="does not combine"):
        generator(
            "a cat", control="canny", control_image=control_photo, init_image=control_photo, **ARGS
        )
    pickled = tmp_path / "pickled-controlnet"
    pickled.mkdir()
    (pickled / "config.json").write_text((tiny_controlnet / "config.json").read_text())
    torch.save({"weight": torch.zeros(1)}, pickled / "diffusion_pytorch_model.bin")
    with pytest.raises(UnsafeWeightsError, match="never loaded"):
        generator(
            "a cat", control="canny", control_image=control_photo, control_model=pickled, **ARGS
        )


def test_depth_model_from_transformers(generator, tiny_controlnet, control_photo, tmp_path):
    """A tiny random DPT depth model, saved locally, computes the depth map."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(0)
    config = DPTConfig(
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=8,
        neck_hidden_sizes=[8, 8, 16, 16],
        fusion_hidden_size=16,
        backbone_out_indices=[0, 1, 2, 3],
        head_in_index=-1,
    )
    folder = tmp_path / "dpt"
    DPTForDepthEstimation(config).save_pretrained(folder, safe_serialization=True)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(
        folder
    )
    control = {"control": "depth", "control_image": control_photo, "control_model": tiny_controlnet}
    as_map = _pixels(generator("a cat", seed=6, **control, **ARGS)[0])
    estimated = _pixels(generator("a cat", seed=6, depth_model=folder, **control, **ARGS)[0])
    assert np.abs(estimated - as_map).mean() > 0.5  # the estimated map differs from the photo
    with pytest.raises(GenerationError, match="only for --control depth"):
        generator("a cat", seed=6, **{**control, "control": "blur"}, depth_model=folder, **ARGS)


def test_cli_control_options(tiny_sd3, tiny_vit_folder, tiny_controlnet, control_photo, tmp_path):
    from typer.testing import CliRunner

    from pixguard.cli import app

    base = ["generate", "a cat", "--variant", str(tiny_sd3), "--safety-model", str(tiny_vit_folder)]
    base += ["--steps", "2", "--width", "32", "--height", "32", "--seed", "4", "--format", "json"]
    control = ["--control", "canny", "--control-image", str(control_photo)]
    control += ["--control-model", str(tiny_controlnet), "--control-scale", "0.8"]
    opened = ["--safety-threshold", "1.0", "--safety-action", "allow-flagged"]
    result = CliRunner().invoke(app, [*base, *opened, *control, "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert Path(json.loads(result.stdout)["path"]).is_file()
    refused = CliRunner().invoke(app, [*base, "--safety-threshold", "0.0", *control])
    assert refused.exit_code == 2
    assert "input_image_refused" in refused.output
    missing = CliRunner().invoke(app, [*base, *opened, "--control", "canny"])
    assert missing.exit_code == 2
    assert "generation_invalid" in missing.output
