"""Benchmark the embedding index: build time, memory, QPS and recall@10.

In one run: 1M synthetic 192-d vectors (the seed model's embedding size; a mixture
of Gaussians, so neighbourhoods look like real embedding clusters) and the real
open_nsfw embeddings of a few thousand augmented photos. Every approximate kind is
compared with exact search on the same queries.

    python bench/search.py [--vectors 1000000] [--images 3000] [--output docs/bench-search.md]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from _common import machine, publish, table

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUERIES = 1000
K = 10


def rss_mb() -> float:
    with open("/proc/self/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def synthetic(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(10, n // 100), dim)).astype(np.float32)
    data = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        picks = rng.integers(0, len(centres), stop - start)
        data[start:stop] = centres[picks] + 0.6 * rng.normal(size=(stop - start, dim)).astype(
            np.float32
        )
    return data


def real_embeddings(count: int) -> np.ndarray:
    """open_nsfw embeddings of augmented SFW photos (crops, flips, colour, scale)."""
    import skimage
    import sklearn.datasets
    from PIL import Image, ImageEnhance

    from pixguard import Classifier

    data = Path(skimage.__file__).parent / "data"
    names = [
        data / n
        for n in (
            "astronaut.png",
            "chelsea.png",
            "coffee.png",
            "rocket.jpg",
            "motorcycle_left.png",
            "horse.png",
            "hubble_deep_field.jpg",
            "retina.jpg",
        )
    ]
    names += list((Path(sklearn.datasets.__file__).parent / "images").glob("*.jpg"))
    photos = [Image.open(p).convert("RGB") for p in names if p.is_file()]
    rng = np.random.default_rng(0)

    def augmented():
        for i in range(count):
            image = photos[i % len(photos)]
            w, h = image.size
            left, top = rng.integers(0, w // 3), rng.integers(0, h // 3)
            crop = image.crop(
                (
                    left,
                    top,
                    left + w // 2 + rng.integers(0, w // 3),
                    top + h // 2 + rng.integers(0, h // 3),
                )
            )
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            yield ImageEnhance.Color(crop).enhance(float(rng.uniform(0.5, 1.5)))

    classifier = Classifier.load("opennsfw")
    return np.stack([p.embedding for p in classifier.iter_predict(augmented(), batch_size=32)])


def evaluate(
    name: str, vectors: np.ndarray, kinds: list[str], ef_values: list[int]
) -> list[list[str]]:
    import faiss

    from pixguard.index import VectorIndex, normalise

    rng = np.random.default_rng(1)
    queries = normalise(
        vectors[rng.choice(len(vectors), QUERIES, replace=False)]
        + 0.05 * rng.normal(size=(QUERIES, vectors.shape[1])).astype(np.float32)
    )
    ids = np.arange(1, len(vectors) + 1)
    rows = []
    truth = None
    for kind in kinds:
        before = rss_mb()
        start = time.perf_counter()
        index = VectorIndex.create(
            vectors.shape[1], kind, training=vectors if kind == "ivfpq" else None
        )
        for chunk in range(0, len(vectors), 100_000):
            index.add(ids[chunk : chunk + 100_000], vectors[chunk : chunk + 100_000])
        build = time.perf_counter() - start
        memory = rss_mb() - before
        settings = [None]
        if kind == "hnsw":
            settings = ef_values
        for ef in settings:
            if ef is not None:
                faiss.downcast_index(index.index.index).hnsw.efSearch = ef
            start = time.perf_counter()
            _, batch_ids = index.search(queries, K)
            batch_qps = QUERIES / (time.perf_counter() - start)
            single = queries[:300] if kind == "flat" and len(vectors) > 100_000 else queries
            start = time.perf_counter()
            for query in single:
                index.search(query[None], K)
            single_qps = len(single) / (time.perf_counter() - start)
            if kind == "flat":
                truth = batch_ids
            recall = np.mean(
                [len(set(a) & set(b)) / K for a, b in zip(truth, batch_ids, strict=True)]
            )
            label = f"{kind}" + (f" efSearch={ef}" if ef else "")
            rows.append(
                [
                    name,
                    label,
                    f"{build:.1f}",
                    f"{memory:.0f}",
                    f"{single_qps:,.0f}",
                    f"{batch_qps:,.0f}",
                    f"{recall:.3f}",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
        del index
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    rows = evaluate(
        f"synthetic {args.vectors:,} x 192",
        synthetic(args.vectors, 192),
        ["flat", "hnsw", "ivfpq"],
        [16, 32, 64, 128],
    )
    if args.images:
        rows += evaluate(
            f"open_nsfw {args.images:,} photos x 1024",
            real_embeddings(args.images),
            ["flat", "hnsw"],
            [16, 64],
        )
    report = [
        f"Machine: {machine()}",
        "",
        table(
            ["data", "index", "build s", "memory MB", "single-query QPS", "batch QPS", "recall@10"],
            rows,
        ),
        "",
        f"Queries: {QUERIES} perturbed database vectors; recall@10 against exact (flat) search on the same queries.",
    ]
    text = "\n".join(report)
    publish(text, args.output)


if __name__ == "__main__":
    main()
