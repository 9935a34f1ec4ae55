"""Soak the HTTP service with mixed traffic on loopback and watch its memory.

A real ``pixguard serve`` process (a tiny random ViT, and the tests' tiny SD3
pipeline for generation) gets, all at once for ``--seconds``: good JPEG uploads,
hostile files (a 4000x4000 animated GIF, a PNG declaring 30000x30000 pixels, a
truncated JPEG, an SVG, text/plain, a body larger than the limit), slow clients
(headers one byte at a time) and generation jobs followed over their event
streams. It reports the server's RSS over time, the statuses, 5xx errors and the
latency distribution of the good uploads. Targets: < 10% RSS growth after warm-up,
no 5xx. Everything stops by itself.

    python bench/soak.py [--seconds 600] [--output docs/bench-soak.md]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from _common import machine, publish, table

os.environ.setdefault("HF_HUB_OFFLINE", "1")
#: RSS is compared from this point on: models, pools and caches are warm by then.
WARMUP_S = 60.0
RSS_SAMPLE_S = 5.0
GOOD_CLIENTS = 4


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    array = (rng.random((384, 384, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def hostile_files() -> list[tuple[str, bytes, str]]:
    frames = [Image.new("P", (4000, 4000), i) for i in range(10)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    good = _jpeg(99)
    return [
        ("animated 4000x4000 GIF", gif.getvalue(), "image/gif"),
        ("PNG declaring 30000x30000", _png_header(30000, 30000), "image/png"),
        ("truncated JPEG", good[: len(good) // 3], "image/jpeg"),
        ("SVG", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"),
        ("text/plain", b"hello", "text/plain"),
        ("over the byte limit", b"\xff" * (3 * 1024 * 1024), "image/jpeg"),
    ]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.good_latencies: list[float] = []
        self.failures: Counter[str] = Counter()

    def add(self, kind: str, status: int, seconds: float | None = None) -> None:
        with self.lock:
            self.statuses[(kind, status)] += 1
            if seconds is not None:
                self.good_latencies.append(seconds)

    def fail(self, kind: str, error: BaseException) -> None:
        with self.lock:
            self.failures[f"{kind}: {type(error).__name__}"] += 1


def good_client(url: str, deadline: float, tally: Tally, seed: int) -> None:
    import httpx

    images = [_jpeg(seed * 100 + i) for i in range(8)]
    with httpx.Client(timeout=60) as client:
        i = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                response = client.post(
                    f"{url}/v1/classify",
                    content=images[i % len(images)],
                    headers={"content-type": "image/jpeg"},
                )
                tally.add("good", response.status_code, time.perf_counter() - started)
            except Exception as exc:
                tally.fail("good", exc)
            i += 1


def hostile_client(url: str, deadline: float, tally: Tally) -> None:
    import httpx

    files = hostile_files()
    with httpx.Client(timeout=60) as client:
        i = 0
        while time.monotonic() < deadline:
            name, data, content_type = files[i % len(files)]
            try:
                response = client.post(
                    f"{url}/v1/classify", content=data, headers={"content-type": content_type}
                )
                tally.add(f"hostile: {name}", response.status_code)
            except Exception as exc:
                tally.fail(f"hostile: {name}", exc)
            i += 1


def slow_client(port: int, deadline: float, tally: Tally) -> None:
    request = b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
                for byte in request:
                    sock.sendall(bytes([byte]))
                    time.sleep(1.0)
                    if time.monotonic() > deadline:
                        break
            tally.add("slow headers: sent", 0)
        except OSError:
            # The server closed it: the header deadline works.
            tally.add("slow headers: cut off", 0, None)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


def generation_client(url: str, deadline: float, tally: Tally) -> None:
    import httpx

    body = {"prompt": "a cat", "steps": 2, "width": 32, "height": 32}
    with httpx.Client(timeout=120) as client:
        while time.monotonic() < deadline:
            try:
                created = client.post(f"{url}/v1/generate", json=body)
                tally.add("generate", created.status_code)
                if created.status_code != 202:
                    time.sleep(1)
                    continue
                job = created.json()["id"]
                with client.stream("GET", f"{url}/v1/jobs/{job}/events") as stream:
                    events = sum(1 for line in stream.iter_lines() if line.startswith("data: "))
                tally.add("event stream", stream.status_code)
                tally.add(f"events per job: {min(events, 5)}+", 0)
            except Exception as exc:
                tally.fail("generate", exc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    # Tiny random models (pixguard.testing), built here: the soak measures the
    # service, not the model.
    from pixguard.testing import random_timm_folder, tiny_sd3_pipeline

    work = Path(tempfile.mkdtemp(prefix="pixguard-soak-"))
    model = random_timm_folder(work / "vit", model_args={"depth": 2, "img_size": 64})
    pipeline = tiny_sd3_pipeline(work / "sd3")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (work / "server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pixguard",
            "serve",
            "--model",
            str(model),
            "--runtime",
            "torch",
            "--port",
            str(port),
            "--data-dir",
            str(work / "data"),
            "--generate-variant",
            str(pipeline),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "PIXGUARD_MAX_UPLOAD_BYTES": str(2 * 1024 * 1024),
            "PIXGUARD_HEADER_TIMEOUT_S": "5",
            # The random model flags at random; the soak measures the service, so the
            # gate's explicit opt-out lets generated images through (and logs it).
            "PIXGUARD_THRESHOLD": "1.0",
            "PIXGUARD_GENERATE_SAFETY_ACTION": "allow-flagged",
        },
    )
    import httpx

    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() - started > 300:
            raise SystemExit(f"the server did not start; see {log.name}")
        time.sleep(0.3)

    tally = Tally()
    begin = time.monotonic()
    deadline = begin + args.seconds
    threads = [
        threading.Thread(target=good_client, args=(url, deadline, tally, seed))
        for seed in range(GOOD_CLIENTS)
    ]
    threads += [
        threading.Thread(target=hostile_client, args=(url, deadline, tally)),
        threading.Thread(target=slow_client, args=(port, deadline, tally)),
        threading.Thread(target=generation_client, args=(url, deadline, tally)),
    ]
    samples: list[tuple[float, float]] = []
    try:
        for thread in threads:
            thread.start()
        while time.monotonic() < deadline:
            samples.append((time.monotonic() - begin, rss_mb(server.pid)))
            time.sleep(RSS_SAMPLE_S)
        for thread in threads:
            thread.join(timeout=180)
        samples.append((time.monotonic() - begin, rss_mb(server.pid)))
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()

    warm = [rss for t, rss in samples if t >= min(WARMUP_S, args.seconds / 2)]
    growth = 100 * (warm[-1] - warm[0]) / warm[0]
    every = max(1, len(samples) // 10)
    rss_rows = [[f"{t:.0f}", f"{rss:.0f}"] for t, rss in samples[::every]]
    if samples[-1] is not samples[::every][-1]:
        rss_rows.append([f"{samples[-1][0]:.0f}", f"{samples[-1][1]:.0f}"])
    status_rows = [
        [kind, str(status) if status else "-", str(count)]
        for (kind, status), count in sorted(tally.statuses.items())
    ]
    status_rows += [[kind, "client error", str(n)] for kind, n in sorted(tally.failures.items())]
    server_errors = sum(n for (_, status), n in tally.statuses.items() if status >= 500)
    ordered = sorted(tally.good_latencies)

    def pct(p: float) -> str:
        return f"{1000 * ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]:.0f}"

    text = "\n".join(
        [
            f"Machine: {machine()}",
            f"Soak: {args.seconds:.0f} s of mixed traffic on loopback; {GOOD_CLIENTS} good "
            "clients, 1 hostile, 1 slow-header client, 1 generation client with event streams.",
            "",
            table(["seconds", "server RSS MB"], rss_rows),
            "",
            f"RSS growth after {WARMUP_S:.0f} s of warm-up: {warm[0]:.0f} -> {warm[-1]:.0f} MB "
            f"({growth:+.1f}%; target < 10%). 5xx answers: {server_errors} (target 0).",
            "",
            f"Good uploads: {len(ordered)}, latency p50 {pct(0.5)} ms, p90 {pct(0.9)} ms, "
            f"p99 {pct(0.99)} ms, max {1000 * ordered[-1]:.0f} ms, "
            f"mean {1000 * statistics.fmean(ordered):.0f} ms.",
            "",
            table(["traffic", "status", "count"], status_rows),
        ]
    )
    publish(text, args.output)


if __name__ == "__main__":
    main()
