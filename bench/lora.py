"""Benchmark LoRA training: optimizer steps per second and peak memory per precision,
fp32 (the baseline) and bf16 autocast, measured in the same run, each precision in
a fresh child process so that its peak memory is its own.

Here (CPU) it trains on the tests' tiny random SD3 pipeline; on a GPU machine pass
``--variant sd3.5-medium --data DIR`` (captioned images) for real figures.

    python bench/lora.py [--variant FOLDER|sd3.5-medium] [--data DIR] [--steps 30]
                         [--resolution 32] [--batch-size 2] [--rank 16] [--output docs/bench-lora.md]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from itertools import pairwise
from pathlib import Path

from _common import machine, publish, table

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_setup(work: Path) -> tuple[Path, Path]:
    """The tiny random SD3 pipeline the tests use (pixguard.testing), and four
    captioned gradient images, two square and two landscape."""
    import numpy as np
    from PIL import Image

    from pixguard.testing import tiny_sd3_pipeline

    data = work / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        width, height = (48 if i % 2 else 32), 32
        ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        pixels = np.broadcast_to(ramp, (height, width, 3)) + rng.normal(0, 12, (height, width, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text(f"a picture number {i}")
    return tiny_sd3_pipeline(work / "sd3"), data


def child(args: argparse.Namespace) -> None:
    """One training run at one precision; prints its figures as JSON."""
    import torch

    from pixguard import Classifier
    from pixguard.generate.lora import LoraTrainConfig, train_lora

    safety = Classifier.load(args.safety_model, threshold=args.safety_threshold)
    output = Path(args.work) / f"out-{args.one}"
    config = LoraTrainConfig(
        rank=args.rank,
        steps=args.steps,
        batch_size=args.batch_size,
        resolution=args.resolution,
        precision=args.one,
        cache_latents=True,
        checkpoint_every=args.steps,
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train_lora(args.data, variant=args.variant, output=output, config=config, classifier=safety)
    elapsed = [
        json.loads(line)["elapsed_s"]
        for line in (output / "train.log").read_text().splitlines()
        if "loss" in line
    ]
    # The median step time: robust to other work sharing the machine mid-run.
    step_times = [b - a for a, b in pairwise(elapsed[args.warmup - 1 :])]
    figures = {
        "steps_per_s": 1.0 / statistics.median(step_times),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20
        if torch.cuda.is_available()
        else None,
    }
    print("RESULT " + json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", help="registry name or folder (default: tiny random SD3)")
    parser.add_argument("--data", help="captioned images (default: four tiny gradients)")
    parser.add_argument(
        "--safety-model", default="opennsfw", help="screens the data (default: bundled, offline)"
    )
    parser.add_argument("--safety-threshold", type=float)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument(
        "--rounds", type=int, default=2, help="runs per precision, interleaved; the best counts"
    )
    parser.add_argument("--output", type=Path)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        child(args)
        return

    work = Path(tempfile.mkdtemp(prefix="pixguard-bench-lora-"))
    os.environ.setdefault("PIXGUARD_CACHE_DIR", str(work / "cache"))
    if args.variant is None:
        variant, data = tiny_setup(work)
        args.variant, args.data = str(variant), args.data or str(data)
    precisions = args.precisions.split(",")
    results: dict[str, dict] = {}
    for _ in range(args.rounds):
        for precision in precisions:  # interleaved, so drifting load hits every precision
            command = [sys.executable, __file__, "--one", precision, "--work", str(work)]
            for name in ("variant", "data", "safety_model", "safety_threshold", "steps", "warmup"):
                if getattr(args, name) is not None:
                    command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
            command += ["--resolution", str(args.resolution), "--batch-size", str(args.batch_size)]
            command += ["--rank", str(args.rank)]
            run = subprocess.run(command, capture_output=True, text=True, check=False)
            line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{precision} run failed:\n{run.stderr[-3000:]}")
            figures = json.loads(line[len("RESULT ") :])
            best = results.get(precision)
            if best is None or figures["steps_per_s"] > best["steps_per_s"]:
                results[precision] = figures

    baseline = results[precisions[0]]
    rows = []
    for precision, figures in results.items():
        gpu = figures["peak_gpu_mib"]
        rows.append(
            [
                precision,
                f"{figures['steps_per_s']:.2f}",
                f"{figures['steps_per_s'] / baseline['steps_per_s']:.2f}x",
                f"{figures['peak_rss_mib']:.0f}",
                "-" if gpu is None else f"{gpu:.0f}",
            ]
        )
    import torch

    gpu_note = (
        []
        if torch.cuda.is_available()
        else [
            "",
            "No GPU on this machine (none was lent to the session that wrote this table): the "
            "real SD3.5 Medium figures need `python bench/lora.py --variant sd3.5-medium "
            "--data DIR --resolution 1024 --batch-size 1` on a GPU machine. Peak RSS here is "
            "dominated by the libraries (torch, diffusers, transformers), not the tiny model.",
        ]
    )
    what = (
        "tiny random SD3 (tests' pipeline)" if args.variant.startswith(str(work)) else args.variant
    )
    report = "\n".join(
        [
            "# LoRA training benchmark",
            "",
            f"Machine: {machine()}",
            "",
            f"Model: {what}; {args.steps} steps ({args.warmup} warm-up steps not timed), "
            f"batch {args.batch_size}, {args.resolution} px, rank {args.rank}, cached latents. "
            f"Each precision runs {args.rounds} times in fresh processes, interleaved; steps/s is "
            "the best run's median step; the first row is the baseline.",
            "",
            table(["precision", "steps/s", "vs baseline", "peak RSS MiB", "peak GPU MiB"], rows),
            *gpu_note,
        ]
    )
    publish(report, args.output)


if __name__ == "__main__":
    main()
