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


def test_offline_without_a_model_fails_fast_with_the_hint(photos, hf_cache, monkeypatch):
    import time

    from huggingface_hub import constants

    with socket_closed_port() as port:
        # Online as far as huggingface_hub knows, but the Hub does not answer.
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
        started = time.monotonic()
        result = runner.invoke(app, ["classify", str(photos[0])])
        elapsed = time.monotonic() - started
    assert result.exit_code == 2, result.output
    assert "model_not_cached" in result.output
    assert "HF_HUB_OFFLINE=1" in result.output.replace("\n", "")
    assert elapsed < 10


def socket_closed_port():
    """A context giving a loopback port that refuses connections."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def closed():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        yield port

    return closed()


def test_generate_without_a_cached_variant_names_the_repo_and_the_way_out(
    hf_cache, tiny_vit_folder
):
    result = runner.invoke(
        app,
        ["generate", "a cat", "--variant", "sd3.5-medium", "--safety-model", str(tiny_vit_folder)],
    )
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert "[model_not_cached]" in output
    assert "stabilityai/stable-diffusion-3.5-medium" in output
    assert "hf auth login" in output
    assert "--variant FOLDER" in output
    assert "stack" not in output.lower()


def test_generate_without_a_cached_safety_model_names_its_own_option(hf_cache):
    result = runner.invoke(app, ["generate", "a cat"])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert "--safety-model" in output
    assert "`--model" not in output
