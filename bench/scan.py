"""Benchmark `pixguard scan` and the index stores.

Part 1, on the same image files in one run: `Classifier.predict` (the baseline),
the local scan engine, and the Ray engine with 1 and 2 workers. Every figure is end
to end (model load, reading, decoding, inference, Parquet written); Ray's cluster
is started before timing, its actors and their model loads are timed.

Part 2: the Milvus store (Milvus Lite, embedded) against the FAISS + SQLite store
(HNSW), both through the `Index` API, on synthetic 192-d vectors (the seed
model's embedding size): build time, single-query QPS, and recall@10 against
exact search on the same queries. Build CPU seconds (all threads of this process)
are given beside wall time, since a shared machine stretches wall time.

    python bench/scan.py [--images 400] [--vectors 100000 1000000] [--output docs/bench-scan.md]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import machine, publish, table

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = "opennsfw"
RUNTIME = "onnxruntime"
BATCH = 16
QUERIES = 300
K = 10


def make_images(folder: Path, count: int) -> list[Path]:
    """512 px JPEGs cut from the photos shipped with scikit-image and scikit-learn."""
    import skimage
    import sklearn.datasets
    from PIL import Image

    sources = [
        Path(skimage.__file__).parent / "data" / name
        for name in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
    ]
    sources += sorted((Path(sklearn.datasets.__file__).parent / "images").glob("*.jpg"))
    photos = [Image.open(p).convert("RGB").resize((512, 512)) for p in sources if p.is_file()]
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.jpg"
        photos[i % len(photos)].rotate(i % 7).save(path, quality=90)
        paths.append(path)
    return paths


def bench_scan(images: int) -> list[list[str]]:
    import ray

    from pixguard import Classifier
    from pixguard.scale import ScanOptions, scan

    work = Path(tempfile.mkdtemp(prefix="pixguard-bench-scan-"))
    (work / "in").mkdir()
    paths = make_images(work / "in", images)
    options = ScanOptions(model=MODEL, runtime=RUNTIME, batch_size=BATCH)
    rows: list[list[str]] = []

    def record(name: str, seconds: float, baseline: float | None) -> None:
        rate = images / seconds
        overhead = "" if baseline is None else f"{(seconds / baseline - 1) * 100:+.1f}%"
        rows.append([name, f"{seconds:.1f}", f"{rate:.1f}", overhead])
        print(" | ".join(rows[-1]), flush=True)

    Classifier.load(MODEL, runtime=RUNTIME).close()  # warm the conversion cache
    start = time.perf_counter()
    with Classifier.load(MODEL, runtime=RUNTIME) as classifier:
        classifier.predict(paths, batch_size=BATCH)
    record("Classifier.predict (baseline)", time.perf_counter() - start, None)

    start = time.perf_counter()
    scan([str(work / "in")], work / "local", options)
    local = time.perf_counter() - start
    record("scan, local engine", local, None)

    # One logical CPU more than the machine has, for Ray's listing and write tasks, so
    # the actors together get every core (Ray sets their thread count from it), as the
    # local engine does.
    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores + 1, include_dashboard=False, log_to_driver=False)
    try:
        for workers, cpus in ((1, float(cores)), (2, cores / 2)):
            start = time.perf_counter()
            scan(
                [str(work / "in")],
                work / f"ray{workers}",
                options,
                engine="ray",
                workers=workers,
                cpus_per_worker=cpus,
            )
            record(
                f"scan, Ray, {workers} worker{'s' * (workers > 1)} ({cpus:g} CPU each)",
                time.perf_counter() - start,
                local,
            )
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    return rows


def synthetic(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(10, n // 100), dim)).astype(np.float32)
    picks = rng.integers(0, len(centres), n)
    return centres[picks] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)


def bench_stores(count: int) -> list[list[str]]:
    from pixguard.index import Index, NewEntry, normalise

    vectors = normalise(synthetic(count, 192))
    rng = np.random.default_rng(1)
    queries = normalise(
        vectors[rng.choice(count, QUERIES, replace=False)]
        + 0.05 * rng.normal(size=(QUERIES, 192)).astype(np.float32)
    )
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :K]
    work = Path(tempfile.mkdtemp(prefix="pixguard-bench-stores-"))
    rows = []
    try:
        for name, location, kind in (
            ("FAISS + SQLite (HNSW)", str(work / "faiss"), "hnsw"),
            ("Milvus Lite (AUTOINDEX)", f"milvus:{work / 'milvus.db'}", "auto"),
        ):
            start, cpu_start = time.perf_counter(), time.process_time()
            with Index.open(location, kind=kind) as index:
                for first in range(0, count, 10_000):
                    chunk = range(first, min(count, first + 10_000))
                    index.add_entries(
                        [NewEntry(f"{i:064x}", f"v{i}", None, None, vectors[i]) for i in chunk],
                        model="synthetic",
                    )
                index.search_vectors(queries[:1], k=K)  # the structure is ready
                build = time.perf_counter() - start
                build_cpu = time.process_time() - cpu_start
                found = []
                start = time.perf_counter()
                for query in queries:
                    hits = index.search_vectors(query[None], k=K)[0]
                    found.append({int(hit.entry.sha256, 16) for hit in hits})
                qps = QUERIES / (time.perf_counter() - start)
            recall = np.mean([len(f & set(e)) / K for f, e in zip(found, exact, strict=True)])
            rows.append(
                [
                    f"{count:,}",
                    name,
                    f"{build:.1f}",
                    f"{build_cpu:.1f}",
                    f"{qps:,.1f}",
                    f"{recall:.3f}",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--vectors", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    scan_rows = bench_scan(args.images) if args.images else []
    store_rows = [row for count in args.vectors for row in bench_stores(count)]
    report = [f"Machine: {machine()}", ""]
    if scan_rows:
        report += [
            f"{args.images} JPEGs of 512x512, model {MODEL} on {RUNTIME}, batch {BATCH}; "
            "end to end (model load included). Overhead: wall time against the local engine.",
            "",
            table(["run", "seconds", "images/s", "overhead vs local"], scan_rows),
            "",
        ]
    if store_rows:
        report += [
            f"Index stores through the Index API, synthetic 192-d vectors; {QUERIES} single "
            f"queries; recall@{K} against exact search on the same queries.",
            "",
            table(
                ["vectors", "store", "build s", "build CPU s", "single-query QPS", f"recall@{K}"],
                store_rows,
            ),
        ]
    publish("\n".join(report), args.output)


if __name__ == "__main__":
    main()
