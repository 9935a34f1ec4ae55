"""Benchmark generation: pixguard's Generator against calling the diffusers pipeline
directly, in the same run, with the gate's own classification time shown apart.

Here (CPU) it uses the tests' tiny random SD3 pipeline, so it measures pixguard's overhead;
on a GPU machine pass ``--variant`` (a registry name or folder) for real figures.

    python bench/generate.py [--variant FOLDER|sd3.5-medium] [--size 64] [--steps 4] [--images 6]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, publish, table

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_pipeline(folder: Path) -> Path:
    """The tests' tiny random SD3 pipeline, so both time the same thing."""
    from pixguard.testing import tiny_sd3_pipeline

    return tiny_sd3_pipeline(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variant",
        help="registry name, diffusers folder or single file (default: a tiny random pipeline)",
    )
    parser.add_argument("--config", help="for a single-file --variant: variant, repo or folder")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--safety-model", default="opennsfw")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    import torch

    from pixguard import Classifier
    from pixguard.generate import Generator

    work = Path(tempfile.mkdtemp(prefix="pixguard-bench-gen-"))
    os.environ.setdefault("PIXGUARD_CACHE_DIR", str(work / "cache"))
    variant = args.variant or str(tiny_pipeline(work))
    classifier = Classifier.load(args.safety_model)
    generator = Generator.load(variant, config=args.config, classifier=classifier)
    pipeline = generator.pipeline
    call = {
        "num_inference_steps": args.steps,
        "width": args.size,
        "height": args.size,
        "guidance_scale": 4.5,
    }

    def direct(seed: int):
        return pipeline("a cat", generator=torch.Generator("cpu").manual_seed(seed), **call).images[
            0
        ]

    def gated(seed: int):
        return generator(
            "a cat",
            seed=seed,
            steps=args.steps,
            width=args.size,
            height=args.size,
            guidance=4.5,
            output_dir=work / "out",
        )

    direct(0)
    gated(0)
    timings: dict[str, list[float]] = {
        "diffusers pipeline, direct": [],
        "pixguard Generator (gate + PNG)": [],
        "gate classification alone": [],
    }
    for seed in range(1, args.images + 1):  # interleaved, so drift hits both alike
        start = time.perf_counter()
        image = direct(seed)
        timings["diffusers pipeline, direct"].append(time.perf_counter() - start)
        start = time.perf_counter()
        gated(seed)
        timings["pixguard Generator (gate + PNG)"].append(time.perf_counter() - start)
        start = time.perf_counter()
        classifier.predict([image])
        timings["gate classification alone"].append(time.perf_counter() - start)
    base = statistics.median(timings["diffusers pipeline, direct"])
    gate = statistics.median(timings["gate classification alone"])
    ours = statistics.median(timings["pixguard Generator (gate + PNG)"])
    rows = [
        [name, f"{statistics.median(values):.3f}", f"{statistics.median(values) / base:.3f}"]
        for name, values in timings.items()
    ]
    overhead = (ours - base - gate) / base
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = "\n".join(
        [
            f"Machine: {machine()}",
            f"Variant: {args.variant or 'tiny random SD3 pipeline'}, {args.size}x{args.size}, "
            f"{args.steps} steps; safety model {classifier.name} ({classifier.runtime_name})",
            "",
            table(["path", "s/image (median)", "x direct"], rows),
            "",
            f"pixguard's overhead beyond the gate's own classification: {100 * overhead:+.1f}% of the direct call. "
            f"Peak process memory: {peak:.0f} MB.",
        ]
    )
    publish(text, args.output)
    sys.exit(0)


if __name__ == "__main__":
    main()
