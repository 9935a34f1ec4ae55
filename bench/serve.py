"""Benchmark the HTTP service under load, next to offline batch throughput.

One run: real ``pixguard serve`` processes, driven by a load generator in a
separate process with 512 px JPEGs at several concurrencies, next to offline
``Classifier.predict`` in the bench process; optionally a soak that watches the
server's resident memory.

    python bench/serve.py [--model PATH] [--seconds 20] [--concurrency 1 8 32 64]
                          [--repeats 3] [--h11] [--baseline-src DIR]
                          [--soak-seconds 600] [--output docs/bench-serve.md]

CPU per image is the server process's user + system CPU time (all threads) over the
requests it answered, against the offline CPU time per image measured in the same
repetition: the service's own overhead is the ratio above 1. The machine may be
shared, so servers are compared in one run: each repetition measures offline, then
every server at every concurrency in turn, and the table gives medians over the
repetitions (and the load average before and after).

Servers: this tree's (``src/`` beside this script); with ``--h11``, the same with
``PIXGUARD_HTTP_PARSER=h11``; with ``--baseline-src DIR``, another tree's ``src``
(for example ``git archive COMMIT src | tar -x -C DIR``).
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from _common import machine, publish, table

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CONCURRENCY = (1, 8, 32, 64)
THIS_SRC = Path(__file__).resolve().parents[1] / "src"


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


@dataclass
class ServerVariant:
    name: str
    src: Path
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Sample:
    rate: float
    cpu_ms: float
    ratio: float
    latencies: list[float]
    errors: int


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


def start_server(
    variant: ServerVariant, model: str, data_dir: Path
) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, **variant.env, "PYTHONPATH": str(variant.src)}
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "pixguard", "serve", "--model", model),
            *("--port", str(port), "--data-dir", str(data_dir)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    while True:
        if server.poll() is not None:
            raise SystemExit(f"the {variant.name} server exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.3)


def offline_cpu_ms(classifier, images: list[bytes]) -> tuple[float, float]:
    """Images per second and CPU ms per image of offline ``predict`` (batch 16)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(OFFLINE_REPEATS):
        classifier.predict(images, batch_size=16)
    count = OFFLINE_REPEATS * len(images)
    return count / (time.perf_counter() - start), 1000 * (time.process_time() - cpu_start) / count


def drive(server: subprocess.Popen, url: str, concurrency: int, seconds: float, images, offline_ms):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    cpu_before = cpu_seconds(server.pid)
    generator = context.Process(
        target=_load, args=(f"{url}/v1/classify", concurrency, seconds, images, results)
    )
    generator.start()
    latencies, errors, elapsed = results.get()
    generator.join()
    cpu_ms = 1000 * (cpu_seconds(server.pid) - cpu_before) / len(latencies)
    return Sample(len(latencies) / elapsed, cpu_ms, cpu_ms / offline_ms, latencies, errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", help="model folder or name (default: random vit_tiny_patch16_384)"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="load duration per measurement")
    parser.add_argument("--repeats", type=int, default=1, help="repetitions (medians reported)")
    parser.add_argument("--soak-seconds", type=float, default=0.0)
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=list(CONCURRENCY),
        help="client concurrencies to measure",
    )
    parser.add_argument(
        "--h11", action="store_true", help="also this tree's server with http_parser=h11"
    )
    parser.add_argument("--baseline-src", type=Path, help="also a server from this src folder")
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
    variants = [ServerVariant("this tree", THIS_SRC)]
    if args.h11:
        variants.append(ServerVariant("this tree, h11", THIS_SRC, {"PIXGUARD_HTTP_PARSER": "h11"}))
    if args.baseline_src:
        variants.append(
            ServerVariant(f"baseline ({args.baseline_src})", args.baseline_src.resolve())
        )

    offline = Classifier.load(model)
    offline.predict(images[:16], batch_size=16)
    runtime = offline.runtime_name
    load_before = os.getloadavg()
    servers = [
        start_server(variant, model, work / f"data-{i}") for i, variant in enumerate(variants)
    ]
    offline_samples: list[tuple[float, float]] = []
    samples: dict[tuple[int, int], list[Sample]] = {}
    try:
        for repeat in range(args.repeats):
            offline_samples.append(offline_cpu_ms(offline, images))
            offline_ms = offline_samples[-1][1]
            for concurrency in args.concurrency:
                for i, (server, url) in enumerate(servers):
                    sample = drive(server, url, concurrency, args.seconds, images, offline_ms)
                    samples.setdefault((i, concurrency), []).append(sample)
                    print(
                        f"repeat {repeat + 1}: {variants[i].name}, concurrency {concurrency}: "
                        f"{sample.cpu_ms:.1f} CPU ms/img, {sample.ratio:.2f}x offline "
                        f"({offline_ms:.1f} ms), load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
        soak = ""
        if args.soak_seconds:
            server, url = servers[0]
            before = rss_mb(server.pid)
            sample = drive(server, url, 8, args.soak_seconds, images, offline_samples[-1][1])
            after = rss_mb(server.pid)
            soak = (
                f"Soak: {args.soak_seconds:.0f} s at concurrency 8, {len(sample.latencies)} requests, "
                f"{sample.errors} errors; server RSS {before:.0f} MB -> {after:.0f} MB "
                f"({100 * (after - before) / before:+.1f}%)."
            )
    finally:
        for server, _ in servers:
            server.terminate()
            server.wait(timeout=60)
    load_after = os.getloadavg()
    offline.close()
    offline_rate = statistics.median(rate for rate, _ in offline_samples)
    offline_ms = statistics.median(ms for _, ms in offline_samples)
    rows = [
        [
            "offline Classifier.predict, batch 16",
            "-",
            f"{offline_rate:.1f}",
            "1.00",
            f"{offline_ms:.1f}",
            "1.00",
            "-",
            "-",
            "-",
            "-",
        ]
    ]
    for (i, concurrency), runs in samples.items():
        ordered = sorted(latency for run in runs for latency in run.latencies)
        rate = statistics.median(run.rate for run in runs)
        rows.append(
            [
                f"{variants[i].name}, concurrency {concurrency}",
                str(concurrency),
                f"{rate:.1f}",
                f"{rate / offline_rate:.2f}",
                f"{statistics.median(run.cpu_ms for run in runs):.1f}",
                f"{statistics.median(run.ratio for run in runs):.2f}",
                " ".join(f"{run.ratio:.2f}" for run in runs),
                f"{1000 * statistics.median(ordered):.0f}",
                f"{1000 * ordered[int(0.99 * (len(ordered) - 1))]:.0f}",
                str(sum(run.errors for run in runs)),
            ]
        )
    text = "\n".join(
        [
            f"Machine: {machine()}",
            f"Model: {args.model or 'vit_tiny_patch16_384 (random weights)'}, runtime {runtime}",
            f"Repetitions: {args.repeats} x {args.seconds:.0f} s per server and concurrency; "
            f"load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after",
            "",
            table(
                [
                    "path",
                    "concurrency",
                    "img/s",
                    "x offline",
                    "CPU ms/img",
                    "x offline CPU",
                    "x offline CPU, each run",
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
