"""LoRA training on the tests' tiny random SD3 pipeline: screened data, a falling
loss, diffusers-format output, checkpoints that resume, gated validation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixguard import Classifier, DatasetError, FlaggedTrainingDataError, TrainingError
from pixguard.generate.lora import LoraTrainConfig, load_captioned_images, train_lora
from pixguard.testing import tiny_sd3_pipeline
from tests.helpers import gradient_image

CAPTIONS = ["a red square", "a blue square", "a green field", "a dark field"]
# Tiny and fast: 16 px images (the tiny VAE keeps the size), rank 4, batches of 2.
TINY = {"rank": 4, "batch_size": 2, "resolution": 16, "lr": 1e-2}


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory) -> Path:
    return tiny_sd3_pipeline(tmp_path_factory.mktemp("sd3"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Four captioned gradient images, two square and two landscape."""
    folder = tmp_path_factory.mktemp("lora-data")
    for i, caption in enumerate(CAPTIONS):
        size = (16, 16) if i < 2 else (24, 16)
        gradient_image(*size, seed=i).rotate(40 * i).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(caption)
    return folder


@pytest.fixture(scope="module")
def scores(dataset, tiny_vit_folder) -> dict[str, float]:
    classifier = Classifier.load(tiny_vit_folder, runtime="torch")
    paths = sorted(dataset.glob("*.png"))
    return {
        str(p): pred.nsfw_score for p, pred in zip(paths, classifier.predict(paths), strict=True)
    }


@pytest.fixture(scope="module")
def lenient(tiny_vit_folder, scores) -> Classifier:
    """A safety model that flags none of the training images (threshold above them all)."""
    threshold = (max(scores.values()) + 1.0) / 2
    return Classifier.load(tiny_vit_folder, runtime="torch", threshold=threshold)


@pytest.fixture(scope="module")
def trained(tiny_sd3, dataset, lenient, tmp_path_factory):
    output = tmp_path_factory.mktemp("lora-out")
    config = LoraTrainConfig(
        **TINY,
        steps=40,
        checkpoint_every=20,
        cache_latents=True,
        validation_prompt="a red square",
        validation_every=20,
        validation_steps=2,
    )
    return train_lora(
        dataset, variant=tiny_sd3, output=output, config=config, classifier=lenient, device="cpu"
    )


def test_loss_falls_and_the_run_is_recorded(trained):
    losses = trained.losses
    assert len(losses) == 40
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    records = [json.loads(line) for line in (trained.output / "train.log").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 41))
    assert [r["loss"] for r in records if "loss" in r] == pytest.approx(losses)
    validations = [r for r in records if "validation" in r]
    assert [r["step"] for r in validations] == [20, 40]
    for record in validations:
        image = record["validation"][0]
        assert image["decision"] in ("allowed", "blocked")
        assert (image["path"] is None) == (image["decision"] == "blocked")
    with Image.open(trained.output / "loss.png") as plot:
        assert plot.format == "PNG"
    screening = json.loads((trained.output / "screening.json").read_text())
    assert screening["flagged"] == []
    assert len(screening["scores"]) == 4
    assert json.loads((trained.output / "checkpoint" / "latest.json").read_text())["step"] == 40


def _pipeline(tiny_sd3):
    from diffusers import StableDiffusion3Pipeline

    pipeline = StableDiffusion3Pipeline.from_pretrained(
        tiny_sd3,
        use_safetensors=True,
        text_encoder_3=None,
        tokenizer_3=None,  # saved without T5
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _image(pipeline) -> np.ndarray:
    out = pipeline(
        "a red square",
        num_inference_steps=2,
        guidance_scale=5.0,
        width=16,
        height=16,
        generator=torch.Generator("cpu").manual_seed(3),
        output_type="np",
    )
    return out.images[0]


def test_plain_diffusers_loads_the_lora_and_it_changes_the_output(trained, tiny_sd3):
    from safetensors import safe_open

    assert trained.weights.name == "pytorch_lora_weights.safetensors"
    with safe_open(str(trained.weights), framework="pt") as handle:
        keys = list(handle.keys())
    assert keys and all(k.startswith("transformer.") and "lora_" in k for k in keys)
    pipeline = _pipeline(tiny_sd3)
    before = _image(pipeline)
    pipeline.load_lora_weights(str(trained.output))  # plain diffusers, the folder
    after = _image(pipeline)
    assert np.abs(after - before).mean() > 1e-3


def test_pixguard_generate_takes_the_trained_lora(trained, tiny_sd3, tiny_vit_folder, tmp_path):
    from typer.testing import CliRunner

    from pixguard.cli import app

    common = ["generate", "a red square", "--variant", str(tiny_sd3)]
    common += ["--safety-model", str(tiny_vit_folder), "--safety-threshold", "1.0"]
    common += [
        "--safety-action",
        "allow-flagged",
        "--steps",
        "2",
        "--width",
        "16",
        "--height",
        "16",
    ]
    common += ["--seed", "3", "--format", "json"]
    plain = CliRunner().invoke(app, [*common, "-o", str(tmp_path / "plain")])
    adapted = CliRunner().invoke(
        app, [*common, "-o", str(tmp_path / "lora"), "--lora", str(trained.output)]
    )
    assert plain.exit_code == 0, plain.output
    assert adapted.exit_code == 0, adapted.output
    a, b = (
        np.asarray(Image.open(json.loads(r.stdout)["path"]), np.float32) for r in (plain, adapted)
    )
    assert np.abs(a - b).mean() > 0.5


def test_a_resumed_run_continues_from_its_step(tiny_sd3, dataset, lenient, tmp_path):
    from safetensors.torch import load_file

    def run(output: Path, steps: int):
        config = LoraTrainConfig(**TINY, steps=steps, checkpoint_every=3)
        return train_lora(
            dataset,
            variant=tiny_sd3,
            output=output,
            config=config,
            classifier=lenient,
            device="cpu",
        )

    straight = run(tmp_path / "straight", 6)
    first = run(tmp_path / "resumed", 3)
    assert first.resumed_from == 0
    second = run(tmp_path / "resumed", 6)  # the same command, a longer run
    assert second.resumed_from == 3
    records = [
        json.loads(line) for line in (tmp_path / "resumed" / "train.log").read_text().splitlines()
    ]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert second.losses == straight.losses  # the same noise, batches and state
    expected = load_file(straight.weights)
    resumed = load_file(second.weights)
    assert expected.keys() == resumed.keys()
    for key, value in expected.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0)
    # Other settings: the checkpoint is not silently reused.
    with pytest.raises(TrainingError, match="different run"):
        train_lora(
            dataset,
            variant=tiny_sd3,
            output=tmp_path / "resumed",
            config=LoraTrainConfig(**{**TINY, "rank": 2}, steps=6),
            classifier=lenient,
            device="cpu",
        )


def test_a_flagged_training_image_is_refused(tiny_sd3, dataset, tiny_vit_folder, scores, tmp_path):
    from typer.testing import CliRunner

    from pixguard.cli import app

    ordered = sorted(scores.values())
    threshold = (ordered[1] + ordered[2]) / 2  # flags the two highest-scoring images
    flagged = sorted(path for path, score in scores.items() if score >= threshold)
    assert len(flagged) == 2
    strict = Classifier.load(tiny_vit_folder, runtime="torch", threshold=threshold)
    output = tmp_path / "out"
    with pytest.raises(FlaggedTrainingDataError) as error:
        train_lora(
            dataset,
            variant=tiny_sd3,
            output=output,
            config=LoraTrainConfig(**TINY, steps=1),
            classifier=strict,
        )
    assert sorted(path for path, _ in error.value.flagged) == flagged
    assert all(path in str(error.value) for path in flagged)
    assert not output.exists()  # nothing was trained or written
    command = ["lora", "train", str(dataset), "--variant", str(tiny_sd3), "-o", str(output)]
    command += ["--safety-model", str(tiny_vit_folder), "--safety-threshold", str(threshold)]
    command += ["--steps", "1", "--resolution", "16", "--rank", "4", "--device", "cpu"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2
    assert "dataset_flagged" in result.output
    assert all(Path(path).name in result.output for path in flagged)


def test_allow_flagged_is_loud_and_validation_images_pass_the_gate(
    tiny_sd3, dataset, tiny_vit_folder, tmp_path, caplog
):
    """At threshold 0 every image is flagged: training goes on only by opt-out, and
    every validation image is blocked and never written."""
    blocking = Classifier.load(tiny_vit_folder, runtime="torch", threshold=0.0)
    config = LoraTrainConfig(**TINY, steps=2, validation_prompt="a red square", validation_steps=2)
    with caplog.at_level(logging.WARNING):
        result = train_lora(
            dataset,
            variant=tiny_sd3,
            output=tmp_path / "out",
            config=config,
            classifier=blocking,
            allow_flagged=True,
            device="cpu",
        )
    assert "TRAINING ON FLAGGED IMAGES" in caplog.text
    assert len(result.screening.flagged) == 4
    assert json.loads((tmp_path / "out" / "screening.json").read_text())["allowed_flagged"] is True
    [validation] = result.validation
    assert validation["images"][0]["decision"] == "blocked"
    assert validation["images"][0]["path"] is None
    assert not list((tmp_path / "out").rglob("validation/**/*.png"))


def test_cached_latents_stay_paired_with_their_captions_under_shuffling(tiny_sd3, dataset):
    """Each batch's latents come from the same items as its captions, whatever the
    shuffle: cached latents equal freshly encoded ones item by item."""
    from pixguard.generate.lora._data import BatchPlan
    from pixguard.generate.lora._examples import Examples
    from pixguard.generate.lora._loss import step_generator

    items = load_captioned_images(dataset)
    vae = _pipeline(tiny_sd3).vae
    # Distinct marker embeddings per caption make any mis-pairing visible.
    embeddings = {
        item.caption: (torch.full((1, 2, 4), float(i)), torch.full((1, 4), float(i)))
        for i, item in enumerate(items)
    }
    buckets = [(16, 16)] * len(items)
    cached = Examples(items, buckets, embeddings, vae, device="cpu", cache_latents=True)
    fresh = Examples(items, buckets, embeddings, vae, device="cpu", cache_latents=False)
    plan = BatchPlan(buckets, batch_size=2, seed=5)
    order = [i for n in range(plan.batches_per_epoch) for i in plan.batch(n)]
    assert sorted(order) == [0, 1, 2, 3]
    assert order != [0, 1, 2, 3]  # the plan does shuffle
    for number in range(2 * plan.batches_per_epoch):
        batch = plan.batch(number)
        latents, embeds, pooled = cached.batch(batch, step_generator(0, number))
        expected, _, _ = fresh.batch(batch, step_generator(0, number))
        torch.testing.assert_close(latents, expected, rtol=1e-4, atol=1e-5)
        assert [int(row[0, 0]) for row in embeds] == batch
        assert [int(row[0]) for row in pooled] == batch


def test_buckets_and_the_batch_plan():
    from pixguard.generate.lora._data import BatchPlan, nearest_bucket

    assert nearest_bucket(1024, 1024, 1024, 16) == (1024, 1024)
    height, width = nearest_bucket(1536, 1024, 1024, 16)
    assert width > height and height % 16 == 0 and width % 16 == 0
    assert 0.9 < width * height / 1024**2 < 1.1
    buckets = [(16, 16), (16, 32), (16, 16), (16, 32), (16, 16)]
    plan = BatchPlan(buckets, batch_size=2, seed=1)
    assert plan.batches_per_epoch == 3
    epoch = [plan.batch(n) for n in range(3)]
    assert sorted(i for batch in epoch for i in batch) == [0, 1, 2, 3, 4]
    assert all(len({buckets[i] for i in batch}) == 1 for batch in epoch)
    # A fresh plan (a resumed run) gives the same batches at the same numbers.
    again = BatchPlan(buckets, batch_size=2, seed=1)
    assert [again.batch(n) for n in range(5, 8)] == [plan.batch(n) for n in range(5, 8)]


def test_captioned_data_from_folders_and_manifests(dataset, tmp_path):
    items = load_captioned_images(dataset)
    assert [item.caption for item in items] == CAPTIONS
    (tmp_path / "m.jsonl").write_text(
        "\n".join(json.dumps({"image": str(p.path), "caption": p.caption}) for p in items)
    )
    assert load_captioned_images(tmp_path / "m.jsonl") == items
    (tmp_path / "m.csv").write_text(
        "image,caption\n" + "".join(f'{p.path},"{p.caption}"\n' for p in items)
    )
    assert load_captioned_images(tmp_path / "m.csv") == items
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    gradient_image(16, 16).save(lonely / "x.png")
    with pytest.raises(DatasetError, match=r"without a \.txt caption"):
        load_captioned_images(lonely)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "missing.png", "caption": "x"}))
    with pytest.raises(DatasetError, match="no such image"):
        load_captioned_images(tmp_path / "bad.jsonl")


def test_settings_mistakes_are_typed_errors(tiny_sd3, dataset, lenient, tmp_path):
    with pytest.raises(TrainingError, match="at least 1"):
        LoraTrainConfig(steps=0)
    cases = [
        ({"precision": "fp16"}, "needs a CUDA GPU"),
        ({"blocks": (5,)}, r"blocks must be in 0\.\.0"),
        ({"targets": "no_such_module"}, "cannot attach the LoRA"),
    ]
    for settings, message in cases:
        with pytest.raises(TrainingError, match=message):
            train_lora(
                dataset,
                variant=tiny_sd3,
                output=tmp_path / "out",
                config=LoraTrainConfig(**{**TINY, **settings}, steps=1),
                classifier=lenient,
                device="cpu",
            )


def test_cli_lora_train_writes_the_adapter(tiny_sd3, dataset, tiny_vit_folder, lenient, tmp_path):
    from typer.testing import CliRunner

    from pixguard.cli import app

    command = ["lora", "train", str(dataset), "--variant", str(tiny_sd3), "-o", str(tmp_path)]
    command += ["--safety-model", str(tiny_vit_folder)]
    command += ["--safety-threshold", str(lenient.threshold), "--steps", "2", "--rank", "4"]
    command += ["--resolution", "16", "--batch-size", "2", "--device", "cpu", "--cache-latents"]
    command += ["--validation-prompt", "a red square", "--validation-every", "1"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert "pytorch_lora_weights.safetensors (2 steps" in result.stdout
    assert (tmp_path / "pytorch_lora_weights.safetensors").is_file()
    again = CliRunner().invoke(app, [*command, "--steps", "3"])  # the last --steps wins
    assert again.exit_code == 0, again.output
    assert "resumed from step 2" in again.stdout


def test_feed_forward_targets_blocks_checkpointing_and_bf16(tiny_sd3, dataset, lenient, tmp_path):
    from safetensors import safe_open

    config = LoraTrainConfig(
        **TINY,
        steps=2,
        targets="attn+ff",
        blocks=(0,),
        gradient_checkpointing=True,
        precision="bf16",
        alpha=8.0,
    )
    result = train_lora(
        dataset, variant=tiny_sd3, output=tmp_path, config=config, classifier=lenient, device="cpu"
    )
    assert all(np.isfinite(result.losses))
    with safe_open(str(result.weights), framework="pt") as handle:
        keys = list(handle.keys())
        metadata = json.loads(handle.metadata()["lora_adapter_metadata"])
    assert any(".ff.net." in key for key in keys)
    assert any(".attn.to_q." in key for key in keys)
    assert all(key.startswith("transformer.transformer_blocks.0.") for key in keys)
    assert metadata["transformer.lora_alpha"] == 8.0  # alpha travels with the file
