"""Export: self-describing folders that load anywhere, with checked scores."""

from __future__ import annotations

import json
import re

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from typer.testing import CliRunner

from pixguard import Classifier, ExportError, ParityError
from pixguard.cli import app
from pixguard.export import export_model
from pixguard.images import preprocess
from pixguard.runtimes import PARITY_TOLERANCE, parity_images


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "openvino"])
def test_fp32_exports_reload_within_1e4(fmt, full_vit_folder, tmp_path, photos):
    result = export_model(full_vit_folder, format=fmt, output=tmp_path / fmt)
    assert result.parity.max_abs_diff <= 1e-4
    files = sorted(p.name for p in (tmp_path / fmt).iterdir())
    expected_files = {
        "onnx": ["config.json", "model.onnx"],
        "torchscript": ["config.json", "model.torchscript"],
        "openvino": ["config.json", "model.bin", "model.xml"],
    }[fmt]
    assert files == expected_files
    config = json.loads((tmp_path / fmt / "config.json").read_text())
    assert config["label_names"] == ["NSFW", "SFW"]
    assert config["pixguard"]["nsfw_labels"] == ["NSFW"]
    assert config["pixguard"]["preprocessing"]["input_size"] == [3, 384, 384]
    assert config["pixguard"]["export"]["format"] == fmt

    source = Classifier.load(full_vit_folder, runtime="torch").predict(photos)
    runtime = {"onnx": "onnxruntime", "torchscript": "torch", "openvino": "openvino"}[fmt]
    exported = Classifier.load(tmp_path / fmt, runtime=runtime, precision="fp32")
    for a, b in zip(source, exported.predict(photos), strict=True):
        assert b.nsfw_score == pytest.approx(a.nsfw_score, abs=1e-4)
        assert b.embedding.shape == (192,)


def test_exported_onnx_runs_with_plain_onnxruntime(tiny_vit_folder, tmp_path, photos):
    export_model(tiny_vit_folder, format="onnx", output=tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    session = ort.InferenceSession(str(tmp_path / "m" / "model.onnx"))
    pp = config["pixguard"]["preprocessing"]
    image = Image.open(photos[0]).convert("RGB").resize(tuple(pp["input_size"][1:]), Image.BICUBIC)
    x = (np.asarray(image, np.float32) / 255 - pp["mean"]) / pp["std"]
    probabilities, embedding = session.run(
        None, {"pixel_values": x.transpose(2, 0, 1)[None].astype(np.float32)}
    )
    assert probabilities.shape == (1, 2)
    assert embedding.shape == (1, 192)
    from pixguard.images import Preprocessing

    ours = Classifier.load(tmp_path / "m", runtime="onnxruntime").runtime.run(
        preprocess(Image.open(photos[0]).convert("RGB"), Preprocessing.from_dict(pp))[None]
    )
    np.testing.assert_allclose(ours.probabilities, probabilities, atol=0.05)


@pytest.mark.parametrize("fmt", ["openvino", "onnx"])
def test_int8_opennsfw_is_refused_for_label_flips_near_the_threshold(fmt, tmp_path, photos):
    """int8 rounding moves open_nsfw's scores by about 0.1 on the blends near its
    threshold and flips their labels. The quantised graph does so computed exactly
    (fake-quantised in fp32), not only on one CPU's int8 kernels: the gate refuses."""
    with pytest.raises(ParityError, match="nothing was written") as refused:
        export_model(
            "opennsfw", format=fmt, precision="int8", calibration=photos, output=tmp_path / "q"
        )
    found = re.search(r"by up to ([0-9.]+) .* (\d+) label flips", refused.value.message)
    assert found is not None, refused.value.message
    assert float(found[1]) > PARITY_TOLERANCE
    assert int(found[2]) >= 1
    assert [p.name for p in tmp_path.iterdir()] == []


def _int8_calibration(photos: list) -> list:
    # The photos and the gate's own base images: no activation the gate meets lies
    # outside the calibrated ranges (and is clipped), so the gate measures the int8
    # rounding itself. Its blends near the threshold are not calibrated on.
    return [*photos, *parity_images()]


def test_int8_export_passes_the_gate(int8_vit_folder, tmp_path, photos):
    # With 8-bit weights this export failed on an AVX2 CPU (|delta| 0.019 on OpenVINO,
    # 0.030 on onnxruntime: pairs of products overflowed 16 bits); with 7 bits, 0.001.
    result = export_model(
        int8_vit_folder,
        format="openvino",
        precision="int8",
        calibration=_int8_calibration(photos),
        output=tmp_path / "q",
    )
    assert result.parity.passed
    assert result.parity.near_threshold > 0
    # Well inside the tolerance, so that it passes on every CPU, not just this one.
    assert result.parity.max_abs_diff <= PARITY_TOLERANCE / 2
    classifier = Classifier.load(tmp_path / "q")  # auto
    assert classifier.runtime_name == "openvino/int8"
    reference = Classifier.load(int8_vit_folder, runtime="torch").predict(photos)
    for a, b in zip(reference, classifier.predict(photos), strict=True):
        assert b.nsfw_score == pytest.approx(a.nsfw_score, abs=PARITY_TOLERANCE)
    with pytest.raises(Exception, match="quantised to int8"):
        Classifier.load(tmp_path / "q", runtime="openvino", precision="fp32")
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    recorded = config["pixguard"]["export"]["parity_reference"]
    assert len(recorded["scores"]) == len(parity_images()) + len(recorded["blends"])
    assert len(recorded["blends"]) > 0


def test_int8_verdict_is_checked_again_on_another_machine(
    int8_vit_folder, tmp_path, photos, monkeypatch
):
    """The verdict recorded at export speaks for the exporting machine only: where
    OpenVINO's int8 kernels stray on another machine, auto must not take them."""
    export_model(
        int8_vit_folder,
        format="onnx",
        precision="int8",
        calibration=_int8_calibration(photos),
        output=tmp_path / "q",
    )
    from pixguard.runtimes import RuntimeOutput, _openvino

    original = _openvino.OpenVinoRuntime.run

    def strays(self, batch):
        out = original(self, batch)
        shifted = np.clip(out.probabilities + np.float32([-0.05, 0.05]), 0, 1)
        return RuntimeOutput(probabilities=shifted, embeddings=out.embeddings)

    monkeypatch.setenv("PIXGUARD_CACHE_DIR", str(tmp_path / "other-machine"))
    monkeypatch.setattr(_openvino.OpenVinoRuntime, "run", strays)
    classifier = Classifier.load(tmp_path / "q")  # auto
    assert classifier.runtime_name == "onnxruntime/int8"
    explicit = Classifier.load(tmp_path / "q", runtime="openvino", precision="int8")
    assert not explicit.parity.passed
    assert explicit.parity.max_abs_diff >= 0.04


def test_int8_that_fails_the_gate_writes_nothing(full_vit_folder, tmp_path, photos):
    # A random ViT with a sharp head is far more sensitive than a trained one;
    # its int8 graph strays past the gate, so the export must refuse.
    with pytest.raises(ParityError, match="nothing was written"):
        export_model(
            full_vit_folder,
            format="onnx",
            precision="int8",
            calibration=photos,
            output=tmp_path / "q",
        )
    assert not (tmp_path / "q").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_export_argument_errors(tiny_vit_folder, tmp_path):
    with pytest.raises(ExportError, match="calibration"):
        export_model(tiny_vit_folder, format="onnx", precision="int8", output=tmp_path / "a")
    with pytest.raises(ExportError, match="unknown format"):
        export_model(tiny_vit_folder, format="tflite", output=tmp_path / "b")
    with pytest.raises(ExportError, match="TorchScript"):
        export_model("opennsfw", format="torchscript", output=tmp_path / "c")
    (tmp_path / "d").mkdir()
    with pytest.raises(ExportError, match="exists"):
        export_model(tiny_vit_folder, format="onnx", output=tmp_path / "d")


def test_overwrite_replaces_only_a_folder_pixguard_exported(tiny_vit_folder, tmp_path):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"not to be deleted")
    with pytest.raises(ExportError, match="only a folder written by pixguard export"):
        export_model(tiny_vit_folder, format="onnx", output=mine, overwrite=True)
    assert (mine / "holiday.jpg").read_bytes() == b"not to be deleted"
    # A model folder that pixguard did not export is not replaced either.
    with pytest.raises(ExportError, match="only a folder written by pixguard export"):
        export_model(tiny_vit_folder, format="onnx", output=tiny_vit_folder, overwrite=True)

    out = tmp_path / "exported"
    export_model(tiny_vit_folder, format="onnx", output=out)
    (out / "stale.txt").write_text("from the previous export")
    export_model(tiny_vit_folder, format="onnx", output=out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.onnx"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_exported_folders_have_normal_permissions(tiny_vit_folder, tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        out = export_model(tiny_vit_folder, format="onnx", output=tmp_path / "m").folder
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o755
    assert (out / "config.json").stat().st_mode & 0o777 == 0o644


def test_torchscript_loads_only_from_pixguard_exports_or_when_trusted(
    tiny_vit_folder, tmp_path, monkeypatch, photos
):
    import shutil

    import torch

    from pixguard import UnsafeWeightsError

    out = export_model(tiny_vit_folder, format="torchscript", output=tmp_path / "ts").folder
    Classifier.load(out, runtime="torch").classify(photos[0])  # exported here: trusted

    # The same folder with its archive swapped for another program is refused.
    swapped = tmp_path / "swapped"
    shutil.copytree(out, swapped)
    original = torch.jit.load(str(out / "model.torchscript"))
    torch.jit.save(torch.jit.freeze(original.eval()), str(swapped / "model.torchscript"))
    with pytest.raises(UnsafeWeightsError, match="TorchScript archives are code"):
        Classifier.load(swapped)
    assert Classifier.load(swapped, trust_torchscript=True).classify(photos[0]).ok

    # On another machine (a fresh pixguard cache) nothing was exported: refused too.
    monkeypatch.setenv("PIXGUARD_CACHE_DIR", str(tmp_path / "other-machine"))
    with pytest.raises(UnsafeWeightsError):
        Classifier.load(out, runtime="torch")
    runner = CliRunner()
    refused = runner.invoke(app, ["classify", str(photos[0]), "-m", str(out)])
    assert refused.exit_code == 2
    assert "model_unsafe_weights" in refused.output
    trusted = runner.invoke(
        app, ["classify", str(photos[0]), "-m", str(out), "--trust-torchscript", "-f", "jsonl"]
    )
    assert trusted.exit_code == 0, trusted.output
    assert json.loads(trusted.stdout)["runtime"] == "torch/fp32"


def test_cli_export_then_classify(tiny_vit_folder, tmp_path, photos):
    runner = CliRunner()
    out = tmp_path / "exported"
    result = runner.invoke(
        app, ["export", "-m", str(tiny_vit_folder), "-f", "openvino", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "max |delta score|" in result.stdout
    classified = runner.invoke(
        app,
        [
            "classify",
            str(photos[0]),
            "-m",
            str(out),
            "-f",
            "jsonl",
            "--runtime",
            "openvino",
            "--precision",
            "fp32",
        ],
    )
    assert classified.exit_code == 0, classified.output
    row = json.loads(classified.stdout)
    assert row["runtime"] == "openvino/fp32"
    again = runner.invoke(app, ["export", "-m", str(tiny_vit_folder), "-o", str(out)])
    assert again.exit_code == 2
    assert "export_failed" in again.output
