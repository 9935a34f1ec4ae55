"""The deletion test on the bundled photos, and what an explanation costs.

For each photo in examples/images and each model: explain it, grey out the 3 x 3
square of the 8 x 8 grid holding the most heat, and compare the score drop with
the mean drop over 8 random squares of the same size (the same run). Scores are
also given as NSFW log-odds, which still move when the probability is near 0.
An overlay of each photo is written beside the report.

    python bench/explain.py [--models opennsfw] [--output docs/bench-explain.md]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

from PIL import Image

from _common import machine, publish, table

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent


def log_odds(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["opennsfw"])
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    from pixguard import Classifier
    from pixguard.classify import deletion_check

    photos = sorted((ROOT / "examples" / "images").glob("*.[jp][pn]g"))
    rows = []
    for name in args.models:
        classifier = Classifier.load(name)
        for photo in photos:
            image = Image.open(photo).convert("RGB")
            start = time.perf_counter()
            explanation = classifier.explain([image])[0]
            seconds = time.perf_counter() - start
            if args.output:
                overlay = args.output.parent / f"explain-{name}-{photo.stem}.png"
                explanation.overlay().save(overlay)
            check = deletion_check(classifier, image)
            peak = max(max(row) for row in explanation.grid()["values"])
            hot, rand = check.hot_score, sum(check.random_scores) / len(check.random_scores)
            rows.append(
                [
                    name,
                    photo.name,
                    explanation.method or "-",
                    f"{seconds:.2f}",
                    f"{peak:.3f}",
                    f"{check.score:.5f}",
                    f"{hot:.5f}",
                    f"{rand:.5f}",
                    f"{log_odds(check.score) - log_odds(hot):+.3f}",
                    f"{log_odds(check.score) - log_odds(rand):+.3f}",
                ]
            )
    report = "\n".join(
        [
            "# Explanations: the deletion test on the bundled photos",
            "",
            f"Machine: {machine()}.",
            "",
            table(
                [
                    "model",
                    "photo",
                    "method",
                    "explain s",
                    "grid peak",
                    "score",
                    "hot deleted",
                    "random deleted (mean of 8)",
                    "log-odds drop, hot",
                    "log-odds drop, random",
                ],
                rows,
            ),
        ]
    )
    publish(report, args.output)


if __name__ == "__main__":
    main()
