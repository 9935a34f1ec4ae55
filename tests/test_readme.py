"""The README's examples run as written, so the README stays true."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _python_blocks() -> list[str]:
    """Every Python example, except those that say they need the user's own data."""
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
    return [block for block in blocks if "(not run by the tests)" not in block]


def _command(prefix: str) -> list[str]:
    line = re.search(rf"```bash\n({re.escape(prefix)}[^\n]*)\n```", README).group(1)
    return line.split()[1:]


def _pixguard(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pixguard", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the example images and the README's own export."""
    folder = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "examples", folder / "examples")
    result = _pixguard(_command("pixguard export"), folder)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_python_examples_run(index, workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    from pixguard.models import _registry

    before = dict(_registry._REGISTRY)
    try:
        exec(compile(_python_blocks()[index], f"README block {index}", "exec"), {})
    finally:
        _registry._REGISTRY.clear()
        _registry._REGISTRY.update(before)


def test_plain_onnxruntime_example_matches_pixguard(workdir):
    """The README's command runs as written after its export command, and the
    script gives pixguard's own score."""
    line = re.search(r"```bash\n(python examples/onnxruntime_only\.py[^\n]*)\n```", README).group(1)
    result = subprocess.run(
        [sys.executable, *line.split()[1:]],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    score = float(re.search(r"nsfw_score ([0-9.e-]+)", result.stdout).group(1))
    from pixguard import Classifier

    ours = Classifier.load(workdir / "exported/opennsfw", runtime="onnxruntime")
    expected = ours.classify(workdir / "examples/images/rocket.jpg").nsfw_score
    assert score == pytest.approx(expected, abs=1e-6)


def test_main_job_example_runs_offline():
    args = _command("pixguard classify")
    assert "--model" in args
    assert "opennsfw" in args
    result = _pixguard(args, ROOT)
    assert result.returncode == 0, result.stderr
    assert "rocket.jpg" in result.stdout
    assert "sfw" in result.stdout


def test_policy_example_runs_and_adds_actions():
    import hashlib
    import json

    args = _command("pixguard classify examples/images --model opennsfw --policy")
    result = _pixguard(args, ROOT)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    version = hashlib.sha256((ROOT / "examples" / "policy.toml").read_bytes()).hexdigest()
    assert rows
    assert all(row["policy_version"] == version for row in rows)
    # The example photos are safe and score far below the example's review band.
    assert {row["action"] for row in rows} == {"allow"}
