"""scripts/setup.sh refuses, with a message, what the lock was not resolved for."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_setup(*args: str, python: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh"), *args],
        env={"PATH": "/usr/bin:/bin", "PYTHON": python},
        capture_output=True,
        text=True,
        timeout=60,
    )


def fake_python(tmp_path: Path, version: str) -> str:
    """An interpreter stand-in that reports ``version`` and can do nothing else, so a
    setup that went past the version check would fail loudly."""
    shim = tmp_path / "python"
    shim.write_text(f'#!/bin/sh\n[ "$1" = -c ] && echo {version} && exit 0\nexit 99\n')
    shim.chmod(0o755)
    return str(shim)


def test_an_untested_python_is_refused_before_anything_is_installed(tmp_path):
    result = run_setup(python=fake_python(tmp_path, "3.12"))
    assert result.returncode == 1
    assert "tested on Python 3.11, and this is Python 3.12" in result.stderr
    assert "PYTHON=python3.11" in result.stderr
    assert "pip install" not in result.stdout


def test_a_missing_interpreter_is_named(tmp_path):
    result = run_setup(python=str(tmp_path / "nowhere" / "python3.11"))
    assert result.returncode == 1
    assert "no Python at" in result.stderr


def test_an_unknown_option_is_a_usage_error(tmp_path):
    result = run_setup("--fast", python=fake_python(tmp_path, "3.11"))
    assert result.returncode == 2
    assert "unknown option --fast" in result.stderr
