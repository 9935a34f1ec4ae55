"""The ``pixguard`` command: formats, exit codes, outputs and the installed entry point."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from pixguard import Classifier
from pixguard.cli import app

runner = CliRunner()


@pytest.fixture
def image_dir(tmp_path: Path, photos: list[Path]) -> Path:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(photos[0], folder / "a.png")
    shutil.copy(photos[5], folder / "b.jpg")
    shutil.copy(photos[6], folder / "sub" / "c.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return folder


def _jsonl(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_jsonl_keeps_order_and_reports_bad_files(image_dir, tiny_vit_folder):
    result = runner.invoke(
        app,
        ["classify", str(image_dir), "--model", str(tiny_vit_folder), "--format", "jsonl"],
    )
    assert result.exit_code == 1, result.output
    rows = _jsonl(result.stdout)
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.jpg", "broken.jpg"]
    for row in rows:
        assert {"path", "label", "nsfw_score", "model", "threshold", "error"} <= row.keys()
        assert row["model"] == str(tiny_vit_folder)
    assert rows[0]["error"] is None
    assert rows[0]["label"] in {"nsfw", "sfw"}
    assert rows[2]["label"] is None
    assert rows[2]["error"]["code"].startswith("image_")
    expected = Classifier.load(tiny_vit_folder).classify(image_dir / "a.png").nsfw_score
    assert rows[0]["nsfw_score"] == pytest.approx(expected, abs=1e-6)


def test_recursive_descends_and_exit_zero_when_all_read(image_dir, tiny_vit_folder):
    (image_dir / "broken.jpg").unlink()
    result = runner.invoke(
        app,
        ["classify", str(image_dir), "-r", "-m", str(tiny_vit_folder), "-f", "jsonl"],
    )
    assert result.exit_code == 0, result.output
    names = [Path(r["path"]).name for r in _jsonl(result.stdout)]
    assert names == ["a.png", "b.jpg", "c.jpg"]


def test_threshold_option_changes_labels(image_dir, tiny_vit_folder):
    args = ["classify", str(image_dir / "a.png"), "-m", str(tiny_vit_folder), "-f", "jsonl"]
    low = _jsonl(runner.invoke(app, [*args, "--threshold", "0"]).stdout)[0]
    high = _jsonl(runner.invoke(app, [*args, "--threshold", "1"]).stdout)[0]
    assert (low["label"], low["threshold"]) == ("nsfw", 0.0)
    assert high["threshold"] == 1.0
    assert high["label"] == ("nsfw" if high["nsfw_score"] >= 1.0 else "sfw")


def test_csv_json_and_table_formats(image_dir, tiny_vit_folder):
    base = ["classify", str(image_dir), "-m", str(tiny_vit_folder)]
    rows = list(csv.DictReader(io.StringIO(runner.invoke(app, [*base, "-f", "csv"]).stdout)))
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.jpg", "broken.jpg"]
    assert {"p_NSFW", "p_SFW", "error_code"} <= rows[0].keys()
    assert float(rows[0]["p_NSFW"]) == pytest.approx(float(rows[0]["nsfw_score"]), abs=1e-6)
    assert rows[2]["error_code"].startswith("image_")
    data = json.loads(runner.invoke(app, [*base, "-f", "json"]).stdout)
    assert len(data) == 3
    table = runner.invoke(app, [*base, "-f", "table"]).stdout
    assert "a.png" in table
    assert "image_" in table


def test_output_file_and_embeddings(image_dir, tiny_vit_folder, tmp_path):
    out = tmp_path / "results" / "out.jsonl"
    vectors = tmp_path / "results" / "emb.npy"
    result = runner.invoke(
        app,
        [
            "classify",
            str(image_dir),
            "-m",
            str(tiny_vit_folder),
            "-f",
            "jsonl",
            "--output",
            str(out),
            "--embeddings",
            str(vectors),
        ],
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    rows = _jsonl(out.read_text())
    assert len(rows) == 3
    array = np.load(vectors)
    assert array.shape == (3, 192)
    assert array.dtype == np.float32
    assert np.isfinite(array[:2]).all()
    assert np.isnan(array[2]).all()  # the broken file has no embedding
    expected = Classifier.load(tiny_vit_folder).classify(image_dir / "b.jpg").embedding
    np.testing.assert_allclose(array[1], expected, atol=1e-5)
    assert sorted(p.name for p in out.parent.iterdir()) == ["emb.npy", "out.jsonl"]


def test_usage_errors_exit_2(image_dir, tiny_vit_folder):
    bad_threshold = runner.invoke(
        app, ["classify", str(image_dir), "-m", str(tiny_vit_folder), "--threshold", "1.5"]
    )
    assert bad_threshold.exit_code == 2
    assert "threshold_invalid" in bad_threshold.output
    unknown_model = runner.invoke(app, ["classify", str(image_dir), "-m", "nope"])
    assert unknown_model.exit_code == 2
    assert "model_not_found" in unknown_model.output
    bad_format = runner.invoke(app, ["classify", str(image_dir), "-f", "xml"])
    assert bad_format.exit_code == 2


def test_default_model_not_cached_is_a_clear_error(image_dir, hf_cache):
    result = runner.invoke(app, ["classify", str(image_dir)])
    assert result.exit_code == 2
    assert "model_not_cached" in result.output
    assert "--model opennsfw" in result.output
    assert "Traceback" not in result.output


def test_models_lists_the_registry(hf_cache):
    result = runner.invoke(app, ["models", "--format", "json"])
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["marqo-nsfw-384"]["status"] == "missing"
    assert rows["marqo-nsfw-384"]["default"] is True
    assert rows["marqo-nsfw-384"]["embedding_dim"] == 192
    assert rows["marqo-nsfw-384"]["input_size"] == [3, 384, 384]
    assert rows["opennsfw"]["status"] == "bundled"
    table = runner.invoke(app, ["models"]).stdout
    assert "opennsfw" in table


def test_installed_entry_point_runs_offline(tmp_path, photos):
    """The real console script, in a fresh process, with the bundled model."""
    script = Path(sys.executable).with_name("pixguard")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pixguard"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            *command,
            "classify",
            str(photos[5]),
            str(tmp_path / "missing.jpg"),
            "--model",
            "opennsfw",
            "--format",
            "jsonl",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    rows = _jsonl(result.stdout)
    assert rows[0]["label"] == "sfw"
    assert rows[1]["error"]["code"] == "image_not_found"


def test_progress_bar_goes_to_stderr(image_dir, tiny_vit_folder):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pixguard",
            "classify",
            str(image_dir),
            "-m",
            str(tiny_vit_folder),
            "-f",
            "jsonl",
            "--progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "classifying" in result.stderr
    assert "3/3" in result.stderr
    assert "classifying" not in result.stdout
    assert len(_jsonl(result.stdout)) == 3


def test_no_inputs_is_a_usage_error_before_loading_a_model(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["classify", str(empty), "-m", "no-such-model"])
    assert result.exit_code == 2
    assert "no image files" in result.output
    assert runner.invoke(app, ["classify", ""]).exit_code == 2


def test_output_file_gets_normal_permissions(image_dir, tiny_vit_folder, tmp_path):
    out = tmp_path / "out.csv"
    old = os.umask(0o022)
    try:
        runner.invoke(
            app,
            ["classify", str(image_dir), "-m", str(tiny_vit_folder), "-f", "csv", "-o", str(out)],
        )
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644


def test_internal_errors_exit_3_without_a_traceback(
    image_dir, tiny_vit_folder, monkeypatch, capsys
):
    from pixguard.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(Classifier, "iter_predict", broken)
    monkeypatch.setattr(
        sys, "argv", ["pixguard", "classify", str(image_dir), "-m", str(tiny_vit_folder)]
    )
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 3
    err = capsys.readouterr().err
    assert "simulated bug" in err
    assert "Traceback" not in err


def test_help_lists_commands_in_the_order_a_user_meets_them_with_examples():
    from pixguard.cli._help import COMMAND_EXAMPLES

    runner = CliRunner()
    wide = {"COLUMNS": "200"}
    short = runner.invoke(app, ["-h"], env=wide)
    long = runner.invoke(app, ["--help"], env=wide)
    assert short.exit_code == 0 and short.output == long.output
    registered = list(typer.main.get_command(app).commands)
    assert sorted(registered) == sorted(COMMAND_EXAMPLES), "every command needs an example"
    listed = re.findall(r"^│ ([a-z]+) ", short.output.split("Commands")[1], flags=re.MULTILINE)
    assert listed == list(COMMAND_EXAMPLES)
    assert listed[0] == "classify"
    for example in COMMAND_EXAMPLES.values():
        assert example in short.output
        name = example.split()[1]
        assert runner.invoke(app, [name, "-h"]).exit_code == 0
    assert runner.invoke(app, ["index", "add", "-h"]).exit_code == 0
