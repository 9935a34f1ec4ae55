"""The decoder fuzz target (fuzz/fuzz_decode.py), run briefly as CI: the seed corpus
and libFuzzer's mutations of it; only pixguard's typed image errors may escape."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pixguard._exceptions import ImageError
from pixguard.images import load_image

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
CI_SECONDS = 20


def test_every_seed_decodes_or_fails_with_an_image_error():
    seeds = sorted((FUZZ / "corpus").iterdir())
    assert len(seeds) >= 15
    decoded = 0
    for seed in seeds:
        try:
            load_image(seed.read_bytes(), min_size=(64, 64))
            decoded += 1
        except ImageError:
            pass
    assert decoded >= 10  # the corpus is mostly valid images, mutated by the fuzzer


def test_fuzz_the_decoder_briefly(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(FUZZ / "fuzz_decode.py"),
            str(tmp_path),  # new inputs land here; the committed corpus stays as it is
            str(FUZZ / "corpus"),
            f"-max_total_time={CI_SECONDS}",
            "-rss_limit_mb=3072",
            "-timeout=20",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=CI_SECONDS + 120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "Done" in log
    assert not list(tmp_path.glob("crash-*"))
