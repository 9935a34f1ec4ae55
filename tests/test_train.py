"""Custom policies: fine-tuning, evaluation and calibration on generated textures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pixguard import Classifier, DatasetError
from pixguard.cli import app
from pixguard.train import FinetuneConfig, calibrate, evaluate, finetune, load_dataset
from pixguard.train._metrics import pr_curve, report
from tests.helpers import build_vit_folder

runner = CliRunner()


def texture(kind: str, rng: np.random.Generator, size: int = 72) -> Image.Image:
    """Smooth colour waves, or the same with a fine checker grain on top."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    waves = [
        127
        + 100
        * np.sin(rng.uniform(0.02, 0.08) * (xx * np.cos(a) + yy * np.sin(a)) + rng.uniform(0, 6))
        for a in rng.uniform(0, np.pi, 3)
    ]
    base = np.stack(waves, axis=2)
    if kind == "grainy":
        cell = int(rng.integers(2, 4))
        checker = ((xx // cell + yy // cell) % 2)[..., None]
        base = base + (checker * 2 - 1) * rng.uniform(50, 90)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def textures(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("textures")
    rng = np.random.default_rng(0)
    for kind in ("grainy", "smooth"):
        (root / kind).mkdir()
        for i in range(80):
            texture(kind, rng).save(root / kind / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    # Average pooling keeps texture statistics in the embedding of a random ViT.
    return build_vit_folder(
        tmp_path_factory.mktemp("base"),
        model_args={"depth": 2, "img_size": 64, "global_pool": "avg"},
        seed=0,
    )


@pytest.fixture(scope="module")
def probe(textures, base, tmp_path_factory) -> Path:
    """A model that learned the task, to calibrate."""
    output = tmp_path_factory.mktemp("probe") / "model"
    finetune(
        textures,
        base=str(base),
        output=output,
        nsfw_classes=["grainy"],
        config=FinetuneConfig(mode="linear", epochs=10),
    )
    return output


def test_linear_probe_learns_and_reloads_identically(textures, base, tmp_path):
    events = []
    result = finetune(
        textures,
        base=str(base),
        output=tmp_path / "probe",
        nsfw_classes=["grainy"],
        config=FinetuneConfig(mode="linear", epochs=10),
        progress=events.append,
    )
    assert result.metrics["class_accuracy"] > 0.95
    assert result.metrics["accuracy"] > 0.95
    files = {p.name for p in (tmp_path / "probe").iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "metrics.json",
        "train.log",
        "pr_curve.png",
        "roc_curve.png",
    } <= files
    config = json.loads((tmp_path / "probe" / "config.json").read_text())
    assert config["label_names"] == ["grainy", "smooth"]
    assert config["pixguard"]["nsfw_labels"] == ["grainy"]

    # Reloaded from disk, the folder gives the same predictions as the metrics report.
    reloaded = Classifier.load(tmp_path / "probe", runtime="torch")
    dataset = load_dataset(textures)
    _, val = dataset.split(0.2, seed=0)
    scores = np.array([p.nsfw_score for p in reloaded.predict(val.paths)])
    truth = np.array([s.label == "grainy" for s in val.samples])
    assert report(truth, scores, 0.5)["accuracy"] == pytest.approx(result.metrics["accuracy"])
    again = np.array(
        [
            p.nsfw_score
            for p in Classifier.load(tmp_path / "probe", runtime="torch").predict(val.paths)
        ]
    )
    np.testing.assert_array_equal(scores, again)

    # Embeddings are cached: a second run computes none.
    events.clear()
    finetune(
        textures,
        base=str(base),
        output=tmp_path / "probe2",
        nsfw_classes=["grainy"],
        config=FinetuneConfig(mode="linear", epochs=3),
        progress=events.append,
    )
    assert all(e.get("total", 0) == 0 for e in events if e["stage"] == "embedding")


def test_full_finetuning_learns(textures, base, tmp_path):
    config = FinetuneConfig(mode="full", epochs=20, batch_size=16, lr=3e-4, patience=8)
    result = finetune(
        textures, base=str(base), output=tmp_path / "full", nsfw_classes=["grainy"], config=config
    )
    assert max(h["val_accuracy"] for h in result.history) > 0.95
    assert result.metrics["class_accuracy"] > 0.95
    assert not (tmp_path / "full" / "checkpoint").exists()  # a finished run keeps no checkpoint


class _InterruptedError(Exception):
    pass


def test_interrupted_full_finetuning_resumes(textures, base, tmp_path):
    from pixguard import TrainingError

    config = FinetuneConfig(
        mode="full", epochs=4, batch_size=16, lr=3e-4, patience=8, grad_accumulation=2
    )

    def stop_after_epoch_2(event):
        if event.get("stage") == "validated" and event["epoch"] == 2:
            raise _InterruptedError

    with pytest.raises(_InterruptedError):
        finetune(
            textures,
            base=str(base),
            output=tmp_path / "run",
            nsfw_classes=["grainy"],
            config=config,
            progress=stop_after_epoch_2,
        )
    assert (tmp_path / "run" / "checkpoint" / "optimizer.safetensors").is_file()
    trained = []

    def record(event):
        if event.get("stage") == "validated":
            trained.append(event["epoch"])

    resumed = finetune(
        textures,
        base=str(base),
        output=tmp_path / "run",
        nsfw_classes=["grainy"],
        config=config,
        progress=record,
    )
    assert trained == [2, 3, 4]  # epoch 1 came from the checkpoint; epoch 2 was cut short
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]

    # A checkpoint of another run is refused, not silently reused.
    with pytest.raises(_InterruptedError):
        finetune(
            textures,
            base=str(base),
            output=tmp_path / "other",
            nsfw_classes=["grainy"],
            config=config,
            progress=stop_after_epoch_2,
        )
    changed = FinetuneConfig(mode="full", epochs=4, batch_size=8, lr=1e-3, patience=8)
    with pytest.raises(TrainingError, match="different run"):
        finetune(
            textures,
            base=str(base),
            output=tmp_path / "other",
            nsfw_classes=["grainy"],
            config=changed,
        )
    fresh = finetune(
        textures,
        base=str(base),
        output=tmp_path / "other",
        nsfw_classes=["grainy"],
        config=changed,
        resume=False,
    )
    assert [h["epoch"] for h in fresh.history] == [1, 2, 3, 4]


def test_invalid_settings_fail_before_training(textures, base, tmp_path):
    from pixguard import TrainingError

    with pytest.raises(TrainingError, match="threshold"):
        FinetuneConfig(threshold=1.5)
    with pytest.raises(TrainingError, match="precision"):
        FinetuneConfig(precision="fp16")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="every class"):
        finetune(textures, base=str(base), output=tmp_path / "x", nsfw_classes=["grainy", "smooth"])


def test_evaluate_matches_scikit_learn(textures, base, tmp_path):
    from sklearn import metrics as sk

    classifier = Classifier.load(base, runtime="torch", threshold=0.4)
    result = evaluate(textures, classifier, nsfw_classes=["grainy"], output=tmp_path / "eval")
    dataset = load_dataset(textures)
    scores = np.array([p.nsfw_score for p in classifier.predict(dataset.paths)])
    truth = np.array([s.label == "grainy" for s in dataset.samples])
    predicted = scores >= 0.4
    assert result["accuracy"] == pytest.approx(sk.accuracy_score(truth, predicted))
    assert result["roc_auc"] == pytest.approx(sk.roc_auc_score(truth, scores))
    nsfw = result["classes"]["nsfw"]
    assert nsfw["precision"] == pytest.approx(sk.precision_score(truth, predicted, zero_division=0))
    assert nsfw["recall"] == pytest.approx(sk.recall_score(truth, predicted))
    assert nsfw["f1"] == pytest.approx(sk.f1_score(truth, predicted))
    sfw = result["classes"]["sfw"]
    assert sfw["recall"] == pytest.approx(sk.recall_score(~truth, ~predicted))
    assert (
        result["confusion_matrix"]["rows_true_columns_predicted"]
        == sk.confusion_matrix(truth, predicted).tolist()
    )
    precision, recall, _thresholds = pr_curve(truth, scores)
    sk_precision, sk_recall, _sk_thresholds = sk.precision_recall_curve(truth, scores)
    np.testing.assert_allclose(precision[::-1], sk_precision[:-1])
    np.testing.assert_allclose(recall[::-1], sk_recall[:-1])
    assert (
        json.loads((tmp_path / "eval" / "metrics.json").read_text())["accuracy"]
        == result["accuracy"]
    )
    assert Image.open(tmp_path / "eval" / "pr_curve.png").size[0] > 300


@pytest.mark.parametrize(
    ("target", "key"),
    [({"target_precision": 0.9}, "precision"), ({"target_recall": 0.95}, "recall")],
)
def test_calibrate_meets_its_target(textures, probe, tmp_path, target, key):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(probe, folder)
    point = calibrate(textures, folder, nsfw_classes=["grainy"], runtime="torch", **target)
    assert point[key] >= next(iter(target.values()))
    config = json.loads((folder / "config.json").read_text())
    assert config["pixguard"]["threshold"] == pytest.approx(point["threshold"])
    recheck = evaluate(textures, Classifier.load(folder, runtime="torch"), nsfw_classes=["grainy"])
    assert recheck["threshold"] == pytest.approx(point["threshold"])
    assert recheck["classes"]["nsfw"][key] >= next(iter(target.values()))


def test_manifests_and_splits(textures, tmp_path):
    dataset = load_dataset(textures)
    rows = [{"path": str(s.path), "label": s.label} for s in dataset.samples]
    csv_path = tmp_path / "data.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label"])
        writer.writeheader()
        writer.writerows(rows)
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    for manifest in (csv_path, jsonl):
        assert load_dataset(manifest).classes == ("grainy", "smooth")
        assert len(load_dataset(manifest)) == 160
    train, val = dataset.split(0.25, seed=1)
    assert len(val) == 40
    assert sum(s.label == "grainy" for s in val.samples) == 20  # stratified
    assert not {s.path for s in train.samples} & {s.path for s in val.samples}
    with pytest.raises(DatasetError):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="--nsfw-class"):
        evaluate(textures, Classifier.load("opennsfw", runtime="onnxruntime"))


def test_cli_evaluate_and_calibrate(textures, base, probe, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(probe, folder)
    evaluate_args = ["evaluate", str(textures), "-m", str(folder), "--nsfw-class", "grainy"]
    evaluate_args += ["--runtime", "torch"]
    result = runner.invoke(app, [*evaluate_args, "--format", "json", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 160
    table = runner.invoke(app, evaluate_args)
    assert "threshold table" in table.stdout
    calibrated = runner.invoke(
        app,
        [
            "calibrate",
            str(textures),
            "-m",
            str(folder),
            "--nsfw-class",
            "grainy",
            "--target-recall",
            "0.9",
            "--runtime",
            "torch",
        ],
    )
    assert calibrated.exit_code == 0, calibrated.output
    assert "written to" in calibrated.stdout
    missing = runner.invoke(
        app, ["calibrate", str(textures), "-m", str(folder), "--nsfw-class", "grainy"]
    )
    assert missing.exit_code == 2
    finetuned = runner.invoke(
        app,
        [
            "finetune",
            str(textures),
            "--base",
            str(base),
            "--mode",
            "linear",
            "-o",
            str(tmp_path / "ft"),
            "--nsfw-class",
            "grainy",
            "--epochs",
            "3",
        ],
    )
    assert finetuned.exit_code == 0, finetuned.output
    assert (tmp_path / "ft" / "model.safetensors").is_file()


def test_metrics_are_scikit_learn_s_on_ties_and_one_class():
    from sklearn import metrics as sk

    from pixguard.train._metrics import roc_auc, roc_curve

    rng = np.random.default_rng(3)
    truth = rng.random(400) < 0.3
    scores = np.round(rng.random(400) * 0.6 + truth * 0.3, 2)  # many ties
    assert roc_auc(truth, scores) == pytest.approx(sk.roc_auc_score(truth, scores))
    fpr, tpr = roc_curve(truth, scores)
    sk_fpr, sk_tpr, _ = sk.roc_curve(truth, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    precision, _recall, thresholds = pr_curve(truth, scores)
    assert np.all(np.diff(thresholds) < 0)  # highest threshold first, every distinct score
    assert len(thresholds) == len(np.unique(scores))
    point = report(truth, scores, 0.5)
    assert point["classes"]["sfw"]["f1"] == pytest.approx(sk.f1_score(~truth, scores < 0.5))
    assert report(np.ones(5, bool), np.linspace(0, 1, 5), 0.5)["roc_auc"] is None
    assert precision[0] == pytest.approx(sk.precision_score(truth, scores >= thresholds[0]))


def test_metrics_name_their_split_and_use_a_held_out_test_set(
    textures, base, tmp_path, monkeypatch
):
    dataset = load_dataset(textures)
    train_and_val, test = dataset.split(0.25, seed=7)
    manifest = tmp_path / "train.csv"
    manifest.write_text(
        "path,label\n" + "".join(f"{s.path},{s.label}\n" for s in train_and_val.samples)
    )
    test_manifest = tmp_path / "test.csv"
    test_manifest.write_text(
        "path,label\n" + "".join(f"{s.path},{s.label}\n" for s in test.samples)
    )

    predict_calls = []
    original = Classifier.predict

    def counting(self, images, **kwargs):
        images = list(images)
        predict_calls.append(len(images))
        return original(self, images, **kwargs)

    monkeypatch.setattr(Classifier, "predict", counting)
    config = FinetuneConfig(mode="linear", epochs=3)
    default = finetune(
        manifest, base=str(base), output=tmp_path / "a", nsfw_classes=["grainy"], config=config
    )
    assert default.metrics["metrics_split"] == "validation"
    assert "early stopping" in default.metrics["metrics_split_note"]
    assert len(predict_calls) == 1  # validation inference runs once
    held_out = finetune(
        manifest,
        base=str(base),
        output=tmp_path / "b",
        nsfw_classes=["grainy"],
        config=config,
        test=test_manifest,
    )
    assert held_out.metrics["metrics_split"] == "test"
    assert held_out.metrics["samples"] == held_out.metrics["test_samples"] == len(test)
    assert predict_calls[-1] == len(test)
    stored = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert stored["metrics_split"] == "test"
