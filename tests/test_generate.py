"""Safe generation on a tiny random SD3 pipeline built and saved by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixguard import (
    Classifier,
    GenerationError,
    ModelLoadError,
    PromptRefusedError,
    UnsafeWeightsError,
)
from pixguard.generate import Generator, SafetyGate
from pixguard.testing import tiny_sd3_pipeline
from tests.helpers import save_sd3_single_file, sd3_config_folder


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory) -> Path:
    return tiny_sd3_pipeline(tmp_path_factory.mktemp("sd3"))


@pytest.fixture(scope="module")
def safety(tiny_vit_folder) -> Classifier:
    return Classifier.load(tiny_vit_folder, runtime="torch")


def _generator(
    tiny_sd3, tiny_vit_folder, threshold: float, action: str | None = None, **kwargs
) -> Generator:
    """A generator gated by the tiny ViT; a threshold of 1.0 (let everything through)
    comes with the explicit allow-flagged opt-out, which the gate demands for it."""
    classifier = Classifier.load(tiny_vit_folder, runtime="torch", threshold=threshold)
    action = action or ("allow-flagged" if threshold >= 1.0 else "block")
    return Generator.load(tiny_sd3, classifier=classifier, safety_action=action, **kwargs)


ARGS = {"steps": 2, "width": 32, "height": 32, "guidance": 5.0}


def _cli(variant, safety_model, *options: str):
    """``pixguard generate "a cat"`` at ARGS' size, steps and guidance."""
    from typer.testing import CliRunner

    from pixguard.cli import app

    models = ("--variant", str(variant), "--safety-model", str(safety_model))
    tiny = ("--steps", "2", "--guidance", "5.0", "--width", "32", "--height", "32")
    return CliRunner().invoke(app, ["generate", "a cat", *models, *tiny, *options])


def test_same_seed_same_image_and_png_metadata(tiny_sd3, tiny_vit_folder, tmp_path):
    generator = _generator(tiny_sd3, tiny_vit_folder, threshold=1.0)
    steps = []
    first = generator(
        "a red cat", seed=7, output_dir=tmp_path, on_step=lambda i, n: steps.append((i, n)), **ARGS
    )
    second = generator("a red cat", seed=7, **ARGS)
    other = generator("a red cat", seed=8, **ARGS)
    assert steps == [(1, 2), (2, 2)]
    a, b, c = (np.asarray(r[0].image) for r in (first, second, other))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    saved = Image.open(first[0].path)
    parameters = saved.text["parameters"]
    assert parameters.startswith(
        "a red cat\nNegative prompt: \nSteps: 2, Sampler: FlowMatchEulerDiscrete, CFG scale: 5.0, Seed: 7, Size: 32x32, Model: "
    )
    verdict = json.loads(saved.text["pixguard"])
    assert verdict["decision"] == "allowed"
    assert verdict["safety_model"] == str(tiny_vit_folder)
    np.testing.assert_array_equal(np.asarray(saved.convert("RGB")), a)


def test_parameters_are_validated(tiny_sd3, tiny_vit_folder):
    generator = _generator(tiny_sd3, tiny_vit_folder, threshold=1.0)
    with pytest.raises(GenerationError, match="multiples of 16"):
        generator("x", **{**ARGS, "width": 30})
    with pytest.raises(GenerationError, match="at least 1"):
        generator("x", **{**ARGS, "steps": 0})
    with pytest.raises(GenerationError, match="unknown variant"):
        Generator.load("sd2-nope", classifier=Classifier.load(tiny_vit_folder, runtime="torch"))


def test_gate_blocks_above_the_threshold_and_writes_nothing(tiny_sd3, tiny_vit_folder, tmp_path):
    generator = _generator(tiny_sd3, tiny_vit_folder, threshold=0.0)  # every score is >= 0
    results = generator("a cat", seed=1, output_dir=tmp_path, num_images=2, **ARGS)
    assert [r.gate.decision for r in results] == ["blocked", "blocked"]
    assert all(r.path is None and r.image is None for r in results)
    assert all(r.gate.nsfw_score is not None for r in results)
    assert list(tmp_path.iterdir()) == []


def test_gate_lets_images_below_the_threshold_through(tiny_sd3, tiny_vit_folder, safety):
    generator = _generator(tiny_sd3, tiny_vit_folder, threshold=1.0)
    result = generator("a cat", seed=3, **ARGS)[0]
    assert result.gate.decision == "allowed"
    assert result.gate.nsfw_score == pytest.approx(
        safety.classify(result.image).nsfw_score, abs=1e-6
    )


def test_classifier_failure_blocks(tiny_sd3, tiny_vit_folder, tmp_path):
    generator = _generator(tiny_sd3, tiny_vit_folder, threshold=1.0)

    def broken(batch):
        raise RuntimeError("classifier down")

    generator.gate.classifier.runtime.run = broken
    result = generator("a cat", seed=3, output_dir=tmp_path, **ARGS)[0]
    assert result.gate.decision == "blocked"
    assert "failed" in result.gate.reason
    assert result.path is None
    assert list(tmp_path.iterdir()) == []


def test_region_blur_scope_reaches_the_gate_and_fails_closed(tiny_sd3, tiny_vit_folder):
    # Threshold 0 flags everything, so no region blur can bring a score under it:
    # the gate must fall back to blurring the whole image.
    generator = _generator(
        tiny_sd3, tiny_vit_folder, threshold=0.0, action="blur", blur_scope="region"
    )
    assert generator.gate.blur_scope == "region"
    result = generator("a cat", seed=5, **ARGS)[0]
    assert result.gate.decision == "blurred"
    assert "whole blur" in result.gate.reason


def test_cli_rejects_an_unknown_blur_scope(tiny_sd3, tiny_vit_folder):
    result = _cli(tiny_sd3, tiny_vit_folder, "--blur-scope", "partial")
    assert result.exit_code == 2
    assert "blur-scope" in result.output


def test_blur_never_writes_the_original(tiny_sd3, tiny_vit_folder, tmp_path):
    original = _generator(tiny_sd3, tiny_vit_folder, threshold=1.0)("a cat", seed=5, **ARGS)[
        0
    ].image
    blurred = _generator(tiny_sd3, tiny_vit_folder, threshold=0.0, action="blur")(
        "a cat", seed=5, output_dir=tmp_path, **ARGS
    )[0]
    assert blurred.gate.decision == "blurred"
    files = list(tmp_path.glob("*.png"))
    assert files == [blurred.path]
    written = np.asarray(Image.open(blurred.path).convert("RGB"), dtype=np.float32)
    source = np.asarray(original, dtype=np.float32)
    assert not np.array_equal(written, source)
    assert written.std() < source.std()  # detail is gone


def test_retry_blocked_tries_new_seeds(tiny_sd3, tiny_vit_folder):
    generator = _generator(tiny_sd3, tiny_vit_folder, threshold=1.0)
    scores = [generator("a cat", seed=s, **ARGS)[0].gate.nsfw_score for s in range(10, 16)]
    cut = float(np.median(scores))
    strict = _generator(tiny_sd3, tiny_vit_folder, threshold=cut)
    results = strict("a cat", seed=10, num_images=2, retry_blocked=4, **ARGS)
    allowed = [r for r in results if r.gate.decision == "allowed"]
    assert len(allowed) == min(2, sum(s < cut for s in scores))
    assert [r.seed for r in results] == list(range(10, 10 + len(results)))


def test_prompt_screening_refuses_before_compute(tiny_sd3, tiny_vit_folder):
    generator = _generator(
        tiny_sd3, tiny_vit_folder, threshold=1.0, prompt_screen=["forbidden", "re:bad\\w+"]
    )
    calls = []
    generator.pipeline.__call__  # noqa: B018 - the pipeline must not run
    original = generator.pipeline

    class Spy:
        def __call__(self, *a, **k):
            calls.append(1)
            return original(*a, **k)

    generator.pipeline = Spy()
    for prompt in ("a FORBIDDEN cat", "badness"):
        with pytest.raises(PromptRefusedError):
            generator(prompt, **ARGS)
    assert calls == []
    assert generator("a fine cat", **ARGS)[0].gate.decision == "allowed"


def test_allow_flagged_is_loud(tiny_vit_folder, caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        SafetyGate(Classifier.load(tiny_vit_folder, runtime="torch"), action="allow-flagged")
    assert "OPT-OUT" in caplog.text


def test_cli_generate_json(tiny_sd3, tiny_vit_folder, tmp_path):
    from typer.testing import CliRunner

    from pixguard.cli import app

    args = [
        "generate",
        "a cat",
        "--variant",
        str(tiny_sd3),
        "--safety-model",
        str(tiny_vit_folder),
        "--steps",
        "2",
        "--width",
        "32",
        "--height",
        "32",
        "--seed",
        "4",
        "-o",
        str(tmp_path),
        "--format",
        "json",
    ]
    allowed = CliRunner().invoke(
        app,
        [
            *args,
            "--safety-threshold",
            "1.0",
            "--safety-action",
            "allow-flagged",
            "--num-images",
            "2",
        ],
    )
    assert allowed.exit_code == 0, allowed.output
    rows = [json.loads(line) for line in allowed.stdout.splitlines()]
    assert [r["seed"] for r in rows] == [4, 5]
    assert all(r["decision"] == "allowed" and Path(r["path"]).is_file() for r in rows)
    blocked = CliRunner().invoke(app, [*args, "--safety-threshold", "0.0"])
    assert blocked.exit_code == 1
    assert json.loads(blocked.stdout)["path"] is None
    refused = CliRunner().invoke(app, [*args, "--screen", "cat"])
    assert refused.exit_code == 2
    assert "prompt_refused" in refused.output


@pytest.fixture(scope="module")
def tiny_lora(tiny_sd3, tmp_path_factory) -> Path:
    """A LoRA adapter for the tiny transformer, in diffusers/PEFT format, with
    non-zero weights so that it visibly changes the output."""
    import torch
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer = SD3Transformer2DModel.from_pretrained(tiny_sd3, subfolder="transformer")
    transformer.add_adapter(
        LoraConfig(
            r=4,
            lora_alpha=4,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            init_lora_weights=False,
        )
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn_like(parameter) * 0.5)
    folder = tmp_path_factory.mktemp("lora")
    StableDiffusion3Pipeline.save_lora_weights(
        folder, transformer_lora_layers=get_peft_model_state_dict(transformer)
    )
    return folder


def test_lora_changes_the_output_and_weight_zero_restores_it(tiny_sd3, tiny_vit_folder, tiny_lora):
    plain = np.asarray(
        _generator(tiny_sd3, tiny_vit_folder, 1.0)("a cat", seed=2, **ARGS)[0].image, np.float32
    )
    with_lora = _generator(tiny_sd3, tiny_vit_folder, 1.0, loras=[(tiny_lora, 1.0)])
    changed = np.asarray(with_lora("a cat", seed=2, **ARGS)[0].image, np.float32)
    assert np.abs(changed - plain).mean() > 1.0
    muted = _generator(tiny_sd3, tiny_vit_folder, 1.0, loras=[(tiny_lora, 0.0)])
    restored = np.asarray(muted("a cat", seed=2, **ARGS)[0].image, np.float32)
    assert np.abs(restored - plain).max() <= 1.0


def test_img2img_and_inpaint_run_through_the_gate(tiny_sd3, tiny_vit_folder, tmp_path):
    generator = _generator(tiny_sd3, tiny_vit_folder, 1.0)
    init = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    changed = generator(
        "a cat", seed=1, init_image=init, strength=0.8, output_dir=tmp_path, **ARGS
    )[0]
    assert changed.gate.decision == "allowed"
    assert changed.path is not None
    inpainted = generator("a cat", seed=1, init_image=init, mask=mask, strength=0.8, **ARGS)[0]
    assert inpainted.gate.decision == "allowed"
    assert inpainted.image.size == (32, 32)
    blocked = _generator(tiny_sd3, tiny_vit_folder, 0.0)(
        "a cat", seed=1, init_image=init, mask=mask, **ARGS
    )[0]
    assert blocked.gate.decision == "blocked"
    with pytest.raises(GenerationError, match="mask needs an init image"):
        generator("a cat", mask=mask, **ARGS)


def test_cli_lora_and_img2img_options(tiny_sd3, tiny_vit_folder, tiny_lora, tmp_path):
    from pixguard.cli._generate import _lora_spec

    assert _lora_spec("/a/b") == ("/a/b", 1.0)
    assert _lora_spec("/a/b:0.5") == ("/a/b", 0.5)
    assert _lora_spec("C:/x") == ("C:/x", 1.0)
    init = tmp_path / "init.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
        init
    )
    result = _cli(
        tiny_sd3,
        tiny_vit_folder,
        *(
            "--safety-threshold",
            "1.0",
            "--safety-action",
            "allow-flagged",
            "--lora",
            f"{tiny_lora}:0.7",
        ),
        *("--init-image", str(init), "--strength", "0.7"),
        *("-o", str(tmp_path / "out"), "--format", "json"),
    )
    assert result.exit_code == 0, result.output
    assert Path(json.loads(result.stdout)["path"]).is_file()


def test_torch_compile_gives_the_same_image(tiny_sd3, tiny_vit_folder):
    plain = _generator(tiny_sd3, tiny_vit_folder, 1.0)("a cat", seed=6, **ARGS)[0].image
    compiled = _generator(tiny_sd3, tiny_vit_folder, 1.0, compile=True)("a cat", seed=6, **ARGS)[
        0
    ].image
    difference = np.abs(np.asarray(plain, np.float32) - np.asarray(compiled, np.float32))
    assert difference.max() <= 1.0  # one 8-bit level at most


def test_single_file_checkpoint_gives_the_folder_image(tiny_sd3, tiny_vit_folder, tmp_path):
    """Transformer and VAE from one original-format file, everything else from a
    local config folder that lacks their weights: offline, and the same image."""

    checkpoint = save_sd3_single_file(tiny_sd3, tmp_path / "tiny.safetensors", with_clip_l=False)
    config = sd3_config_folder(tiny_sd3, tmp_path / "config", drop=("transformer", "vae"))
    single = _generator(checkpoint, tiny_vit_folder, 1.0, config=config)
    assert single.name == "tiny.safetensors"
    expected = _generator(tiny_sd3, tiny_vit_folder, 1.0)("a cat", seed=3, **ARGS)[0].image
    np.testing.assert_array_equal(
        np.asarray(single("a cat", seed=3, **ARGS)[0].image), np.asarray(expected)
    )
    result = _cli(
        checkpoint,
        tiny_vit_folder,
        *(
            "--config",
            str(config),
            "--safety-threshold",
            "1.0",
            "--safety-action",
            "allow-flagged",
            "--seed",
            "3",
        ),
        *("-o", str(tmp_path / "out"), "--format", "json"),
    )
    assert result.exit_code == 0, result.output
    written = Image.open(json.loads(result.stdout)["path"])
    assert "Model: tiny.safetensors" in written.text["parameters"]
    np.testing.assert_array_equal(np.asarray(written.convert("RGB")), np.asarray(expected))


def test_single_file_text_encoder_is_taken_from_the_file(tiny_sd3, tiny_vit_folder, tmp_path):
    import torch
    from safetensors.torch import load_file

    checkpoint = save_sd3_single_file(tiny_sd3, tmp_path / "tiny.safetensors", with_clip_l=True)
    config = sd3_config_folder(
        tiny_sd3, tmp_path / "config", drop=("transformer", "vae", "text_encoder")
    )
    generator = _generator(checkpoint, tiny_vit_folder, 1.0, config=config)
    original = load_file(tiny_sd3 / "text_encoder" / "model.safetensors")
    key = "text_model.embeddings.token_embedding.weight"
    assert torch.equal(generator.pipeline.text_encoder.state_dict()[key], original[key])
    assert generator("a cat", seed=1, **ARGS)[0].image is not None


def test_single_file_errors_name_the_file_and_the_reason(tiny_sd3, tiny_vit_folder, tmp_path):
    import torch
    from safetensors.torch import save_file

    classifier = Classifier.load(tiny_vit_folder, runtime="torch")
    pickled = tmp_path / "model.ckpt"
    pickled.write_bytes(b"not loaded")
    with pytest.raises(UnsafeWeightsError, match="pickled checkpoints are never loaded") as error:
        Generator.load(pickled, classifier=classifier)
    assert error.value.source == str(pickled)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="not a readable safetensors"):
        Generator.load(garbage, classifier=classifier)
    unrelated = tmp_path / "unrelated.safetensors"
    save_file({"weight": torch.zeros(2)}, unrelated)
    with pytest.raises(ModelLoadError, match="no SD3 transformer"):
        Generator.load(unrelated, classifier=classifier)
    checkpoint = save_sd3_single_file(tiny_sd3, tmp_path / "tiny.safetensors", with_clip_l=False)
    with pytest.raises(GenerationError, match="cannot tell which SD3 variant"):
        Generator.load(checkpoint, classifier=classifier)
    bare = sd3_config_folder(tiny_sd3, tmp_path / "bare", drop=("text_encoder", "text_encoder_2"))
    with pytest.raises(ModelLoadError, match="no text_encoder and the config cannot provide it"):
        Generator.load(checkpoint, config=bare, classifier=classifier)


def test_single_file_variants_are_recognised_from_keys_and_names():
    from pixguard.generate._loading import _config_variant, _infer_variant

    prefix = "model.diffusion_model.joint_blocks"
    large = {f"{prefix}.37.x_block.mlp.fc1.weight"}
    medium = {f"{prefix}.0.x_block.attn2.qkv.weight"}
    assert _infer_variant(large, "sd3.5_large.safetensors").name == "sd3.5-large"
    assert _infer_variant(large, "sd3.5_large_turbo.safetensors").name == "sd3.5-large-turbo"
    assert _infer_variant(medium, "sd3.5_medium.safetensors").name == "sd3.5-medium"
    assert _infer_variant({f"{prefix}.0.x_block.mlp.fc1.weight"}, "x.safetensors") is None
    assert _config_variant("stabilityai/stable-diffusion-3.5-medium").name == "sd3.5-medium"
    assert _config_variant("sd3.5-large-turbo").name == "sd3.5-large-turbo"
    assert _config_variant("someone/their-sd3") is None


def test_config_mistakes_are_typed_errors(tiny_sd3, tiny_vit_folder, tmp_path):
    classifier = Classifier.load(tiny_vit_folder, runtime="torch")
    checkpoint = save_sd3_single_file(tiny_sd3, tmp_path / "tiny.safetensors", with_clip_l=False)
    with pytest.raises(GenerationError, match="only for single-file checkpoints"):
        Generator.load(tiny_sd3, config=tiny_sd3, classifier=classifier)
    with pytest.raises(GenerationError, match="neither a variant") as error:
        Generator.load(checkpoint, config=tmp_path / "missing" / "config", classifier=classifier)
    assert error.value.source == str(tmp_path / "missing" / "config")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"no readable model_index\.json"):
        Generator.load(checkpoint, config=empty, classifier=classifier)


def test_threshold_one_needs_the_explicit_opt_out(tiny_sd3, tiny_vit_folder, caplog):
    """A threshold of 1.0 flags nothing: the gate refuses it unless the caller opts out."""
    import logging

    from pixguard import InvalidThresholdError

    open_classifier = Classifier.load(tiny_vit_folder, runtime="torch", threshold=1.0)
    for action in ("block", "blur"):
        with pytest.raises(InvalidThresholdError, match="lets every image through"):
            SafetyGate(open_classifier, action=action)
    with caplog.at_level(logging.WARNING):
        SafetyGate(open_classifier, action="allow-flagged")
    assert "OPT-OUT" in caplog.text
    refused = _cli(tiny_sd3, tiny_vit_folder, "--safety-threshold", "1.0")
    assert refused.exit_code == 2
    assert "threshold_invalid" in refused.output


@pytest.mark.parametrize("action", ["block", "blur", "allow-flagged"])
def test_a_nan_score_blocks_as_a_classifier_failure(tiny_vit_folder, action):
    import dataclasses

    classifier = Classifier.load(tiny_vit_folder, runtime="torch", threshold=0.5)
    real_predict = classifier.predict
    classifier.predict = lambda images: [  # a model whose output went NaN
        dataclasses.replace(p, nsfw_score=float("nan")) for p in real_predict(images)
    ]
    image = Image.fromarray(np.full((32, 32, 3), 128, np.uint8))
    decision = SafetyGate(classifier, action=action).check([image])[0]
    assert decision.decision == "blocked"
    assert decision.image is None
    assert "safety classifier failed" in decision.reason


def test_pickled_loras_are_refused(tiny_sd3, tiny_vit_folder, tiny_lora, tmp_path):
    """Only safetensors LoRAs load: a folder holding a pickled .bin, or a .bin file
    named directly, is refused before diffusers could unpickle it."""
    import torch
    from safetensors.torch import load_file

    from pixguard import UnsafeWeightsError

    folder = tmp_path / "pickled-lora"
    folder.mkdir()
    state = load_file(tiny_lora / "pytorch_lora_weights.safetensors")
    torch.save(state, folder / "pytorch_lora_weights.bin")
    classifier = Classifier.load(tiny_vit_folder, runtime="torch")
    for source in (folder, folder / "pytorch_lora_weights.bin"):
        with pytest.raises(UnsafeWeightsError, match="never loaded") as error:
            Generator.load(tiny_sd3, classifier=classifier, loras=[(source, 1.0)])
        assert error.value.source == str(source)
    # The same weights as safetensors, named as a file, load.
    single = tmp_path / "adapter.safetensors"
    single.write_bytes((tiny_lora / "pytorch_lora_weights.safetensors").read_bytes())
    assert Generator.load(tiny_sd3, classifier=classifier, loras=[(single, 1.0)])
