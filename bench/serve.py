"""Benchmark the HTTP service under load, next to offline batch throughput.

One run: offline ``Classifier.predict`` throughput of the model, then a real
``pixguard serve`` process, driven by a load generator in a separate process with
512 px JPEGs at several concurrencies; optionally a soak that watches the server's
resident memory.

    python bench/serve.py [--model PATH] [--seconds 20] [--concurrency 1 8 32 64]
                          [--soak-seconds 600] [--output docs/bench-serve.md]

CPU per image is the server process's user + system CPU time (all threads) over the
requests it answered, against the offline process's CPU time per image: the
service's own overhead is the ratio above 1.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from _common import machine, publish, table

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CONCURRENCY = (1, 8, 32, 64)


def jpegs(count: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        array = (rng.random((512, 512, 3)) * 64 + np.linspace(0, 191, 512)[None, :, None]).astype(
            np.uint8
        )
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


#: Passes over the images for the offline baseline; one pass is too noisy.
OFFLINE_REPEATS = 3


def _load(
    url: str, concurrency: int, seconds: float, images: list[bytes], results: multiprocessing.Queue
) -> None:
    import httpx

    latencies, errors = [], 0
    deadline = time.monotonic() + seconds

    def worker(index: int) -> tuple[list[float], int]:
        mine, failed = [], 0
        with httpx.Client(timeout=60) as client:
            i = index
            while time.monotonic() < deadline:
                start = time.perf_counter()
                response = client.post(
                    url, content=images[i % len(images)], headers={"content-type": "image/jpeg"}
                )
                mine.append(time.perf_counter() - start)
                failed += response.status_code != 200
                i += concurrency
        return mine, failed

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for mine, failed in pool.map(worker, range(concurrency)):
            latencies += mine
            errors += failed
    results.put((latencies, errors, time.perf_counter() - start))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads together."""
    with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat (utime, stime), counted after the ")" of the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder (default: random vit_tiny_patch16_384)")
    parser.add_argument("--seconds", type=float, default=20.0, help="load duration per concurrency")
    parser.add_argument("--soak-seconds", type=float, default=0.0)
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=list(CONCURRENCY),
        help="client concurrencies to measure",
    )
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    from pixguard import Classifier

    work = Path(tempfile.mkdtemp(prefix="pixguard-bench-serve-"))
    os.environ.setdefault("PIXGUARD_CACHE_DIR", str(work / "cache"))
    if args.model:
        model = args.model
    else:
        from pixguard.testing import random_timm_folder

        model = str(random_timm_folder(work / "model"))
    images = jpegs(32)

    offline = Classifier.load(model)
    offline.predict(images[:16], batch_size=16)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(OFFLINE_REPEATS):
        offline.predict(images, batch_size=16)
    offline_rate = OFFLINE_REPEATS * len(images) / (time.perf_counter() - start)
    offline_cpu_ms = 1000 * (time.process_time() - cpu_start) / (OFFLINE_REPEATS * len(images))
    runtime = offline.runtime_name
    offline.close()
    del offline

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pixguard",
            "serve",
            "--model",
            model,
            "--port",
            str(port),
            "--data-dir",
            str(work / "data"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import httpx

    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    rows = [
        [
            "offline Classifier.predict, batch 16",
            "-",
            f"{offline_rate:.1f}",
            "1.00",
            f"{offline_cpu_ms:.1f}",
            "1.00",
            "-",
            "-",
            "-",
        ]
    ]
    context = multiprocessing.get_context("spawn")
    try:
        for concurrency in args.concurrency:
            results = context.Queue()
            cpu_before = cpu_seconds(server.pid)
            generator = context.Process(
                target=_load,
                args=(f"{url}/v1/classify", concurrency, args.seconds, images, results),
            )
            generator.start()
            latencies, errors, elapsed = results.get()
            generator.join()
            cpu_ms = 1000 * (cpu_seconds(server.pid) - cpu_before) / len(latencies)
            ordered = sorted(latencies)
            rate = len(latencies) / elapsed
            rows.append(
                [
                    f"HTTP, concurrency {concurrency}",
                    str(concurrency),
                    f"{rate:.1f}",
                    f"{rate / offline_rate:.2f}",
                    f"{cpu_ms:.1f}",
                    f"{cpu_ms / offline_cpu_ms:.2f}",
                    f"{1000 * statistics.median(ordered):.0f}",
                    f"{1000 * ordered[int(0.99 * (len(ordered) - 1))]:.0f}",
                    str(errors),
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
        soak = ""
        if args.soak_seconds:
            before = rss_mb(server.pid)
            results = context.Queue()
            generator = context.Process(
                target=_load, args=(f"{url}/v1/classify", 8, args.soak_seconds, images, results)
            )
            generator.start()
            latencies, errors, _ = results.get()
            generator.join()
            after = rss_mb(server.pid)
            soak = (
                f"Soak: {args.soak_seconds:.0f} s at concurrency 8, {len(latencies)} requests, {errors} errors; "
                f"server RSS {before:.0f} MB -> {after:.0f} MB ({100 * (after - before) / before:+.1f}%)."
            )
    finally:
        server.terminate()
        server.wait(timeout=60)
    text = "\n".join(
        [
            f"Machine: {machine()}",
            f"Model: {args.model or 'vit_tiny_patch16_384 (random weights)'}, runtime {runtime}",
            "",
            table(
                [
                    "path",
                    "concurrency",
                    "img/s",
                    "x offline",
                    "CPU ms/img",
                    "x offline CPU",
                    "p50 ms",
                    "p99 ms",
                    "errors",
                ],
                rows,
            ),
            "",
            *([soak] if soak else []),
        ]
    )
    publish(text, args.output)


if __name__ == "__main__":
    main()
