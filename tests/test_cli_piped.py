"""The CLI as a user pipes it: whole values off a terminal, odd file names and odd
files in folders reported, the csv columns the README promises."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pixguard.cli import app

runner = CliRunner()


def test_piped_models_table_keeps_every_value_whole():
    # A real pipe, as in `pixguard models | cat`.
    result = subprocess.run(
        [sys.executable, "-m", "pixguard", "models"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "40"},
    )
    lines = [line for line in result.stdout.splitlines() if not line.startswith("# ")]
    header, *rows = [line.split("\t") for line in lines]
    assert header == ["name", "source", "architecture", "input", "embedding", "status"]
    assert {row[0].removesuffix(" (default)") for row in rows} == {"marqo-nsfw-384", "opennsfw"}
    assert all(len(row) == len(header) for row in rows)
    assert "…" not in result.stdout


@pytest.fixture
def odd_folder(tmp_path: Path, photos: list[Path]) -> Path:
    folder = tmp_path / "odd"
    folder.mkdir()
    shutil.copy(photos[0], folder / "a.png")
    # A file name that is not UTF-8 (Linux allows any bytes but "/" and NUL).
    bad_name = os.fsdecode(b"bad-\xff-name.png")
    shutil.copy(photos[5], folder / bad_name)
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    os.mkfifo(folder / "pipe.png")
    return folder


@pytest.mark.parametrize("fmt", ["csv", "table", "jsonl"])
def test_odd_names_and_odd_files_do_not_sink_a_batch(odd_folder, tiny_vit_folder, fmt, tmp_path):
    out = tmp_path / f"out.{fmt}"
    result = runner.invoke(
        app,
        [
            "classify",
            str(odd_folder),
            "-m",
            str(tiny_vit_folder),
            "--runtime",
            "torch",
            "-f",
            fmt,
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 1, result.output  # some inputs failed: reported, not skipped
    text = out.read_text(encoding="utf-8")
    assert "a.png" in text
    assert "bad-" in text and "-name.png" in text
    assert "dangling.jpg" in text and "pipe.png" in text
    if fmt == "csv":
        rows = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(text))}
        assert rows["bad-\\xff-name.png"]["error_code"] == ""
        assert rows["dangling.jpg"]["error_code"] == "image_not_found"
        assert "dangling symbolic link" in rows["dangling.jpg"]["error_message"]
        assert rows["pipe.png"]["error_code"] == "image_unreadable"


def test_csv_has_the_runtime_column(photos, tiny_vit_folder):
    result = runner.invoke(
        app,
        ["classify", str(photos[0]), "-m", str(tiny_vit_folder), "--runtime", "torch", "-f", "csv"],
    )
    assert result.exit_code == 0, result.output
    (row,) = list(csv.DictReader(io.StringIO(result.stdout)))
    assert row["runtime"] == "torch/fp32"
