"""The README's examples run as written, so the README stays true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_python_examples_run(index, monkeypatch):
    monkeypatch.chdir(ROOT)
    from pixguard.models import _registry

    before = dict(_registry._REGISTRY)
    try:
        exec(compile(_python_blocks()[index], f"README block {index}", "exec"), {})
    finally:
        _registry._REGISTRY.clear()
        _registry._REGISTRY.update(before)


def test_main_job_example_runs_offline():
    command = re.search(r"```bash\n(pixguard classify [^\n]*)\n```", README).group(1)
    assert "--model opennsfw" in command
    args = command.split()[1:]
    result = subprocess.run(
        [sys.executable, "-m", "pixguard", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "rocket.jpg" in result.stdout
    assert "sfw" in result.stdout
