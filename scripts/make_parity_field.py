"""Build the parity gate's high-scoring input for open_nsfw, once and offline.

pixguard ships no NSFW image, so every bundled input scores far below open_nsfw's
threshold and the gate could make no blend near it. This script searches for a
synthetic, non-photographic input that open_nsfw itself scores above its threshold:
a small colour field (upsampled by the model's own preprocessing), optimised by a
black-box evolution strategy against the reference runtime (fp32 onnxruntime), on
exactly the pipeline the gate uses (resize, crop, JPEG round trip). Every score it
reports comes from the model. The seed is fixed, so a run reproduces the field.

    python scripts/make_parity_field.py            # writes the PNG, prints the score

The result and how it was made are recorded in
src/pixguard/runtimes/parity_inputs/SOURCES.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pixguard.images import preprocess
from pixguard.models import resolve_model
from pixguard.runtimes import ModelArtifacts, Runtime, nsfw_log_odds, open_reference

MODEL = "opennsfw"
SEED = 20261203
FIELD_SIZE = 16
#: Stop once the field itself scores this high: clearly above the threshold, so the
#: gate's blends between it and a photo cross the threshold on the way.
TARGET_SCORE = 0.9
MAX_STEPS = 300
#: Antithetic pairs per step: each step scores 2 * PAIRS + 1 images.
PAIRS = 8
#: Spread of the perturbations and size of a step, in 8-bit pixel levels.
SIGMA = 12.0
STEP = 3.0
OUTPUT = Path(__file__).parents[1] / "src/pixguard/runtimes/parity_inputs/opennsfw_field.png"


def _images(fields: np.ndarray) -> list[Image.Image]:
    return [Image.fromarray(np.clip(np.rint(f), 0, 255).astype(np.uint8)) for f in fields]


def _score(reference: Runtime, fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model's NSFW score of each field, and its log-odds (which the search climbs:
    they keep a useful slope far from the threshold)."""
    spec = reference.spec
    batch = np.stack([preprocess(image, spec.preprocessing) for image in _images(fields)])
    probabilities = reference.run(batch).probabilities
    scores = probabilities[:, list(spec.nsfw_indices)].sum(axis=1).astype(np.float64)
    return scores, nsfw_log_odds(probabilities, spec.nsfw_indices)


def search(reference: Runtime, seed: int) -> tuple[np.ndarray, float, int]:
    """Antithetic evolution strategy over the field; returns (field, score, steps)."""
    rng = np.random.default_rng(seed)
    field = np.full((FIELD_SIZE, FIELD_SIZE, 3), 127.5) + rng.normal(
        0, SIGMA, (FIELD_SIZE, FIELD_SIZE, 3)
    )
    score = 0.0
    for step in range(1, MAX_STEPS + 1):
        noise = rng.normal(size=(PAIRS, FIELD_SIZE, FIELD_SIZE, 3))
        candidates = np.concatenate([field + SIGMA * noise, field - SIGMA * noise, field[None]])
        scores, log_odds = _score(reference, np.clip(candidates, 0, 255))
        score = float(scores[-1])
        print(f"step {step:3d}  score {score:.4f}", flush=True)
        if score >= TARGET_SCORE:
            return field, score, step
        gain = log_odds[:PAIRS] - log_odds[PAIRS : 2 * PAIRS]
        gradient = np.tensordot(gain, noise, axes=1)
        field = np.clip(field + STEP * gradient / (np.sqrt(np.mean(gradient**2)) + 1e-12), 0, 255)
    return field, score, MAX_STEPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    spec = resolve_model(MODEL)
    reference = open_reference(ModelArtifacts(spec))
    started = time.perf_counter()
    field, score, steps = search(reference, args.seed)
    _images(field[None])[0].save(args.output, optimize=True)
    with Image.open(args.output) as written:
        pixels = np.asarray(written.convert("RGB"), dtype=np.float64)
    final = float(_score(reference, pixels[None])[0][0])
    print(
        f"{args.output.name}: {MODEL} score {final:.4f} (threshold {spec.threshold}), "
        f"seed {args.seed}, {steps} steps, {time.perf_counter() - started:.0f} s"
    )
    if final < spec.threshold:
        raise SystemExit(f"the field did not reach the threshold (best score {score:.4f})")


if __name__ == "__main__":
    main()
