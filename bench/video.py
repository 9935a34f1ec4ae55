"""Benchmark video moderation against decoding and classifying every frame.

The baseline is opennsfw2's approach, measured here in the same run: every frame
is decoded (PyAV) and classified, with the same model and runtime, in batches of
16. pixguard samples 1 frame per second plus scene changes (the defaults), with
the same Classifier. The clip is made by this script: 60 s of 1080p H.264 at
30 fps, cutting between pans over the bundled photos every 10 s.

    python bench/video.py [--model opennsfw] [--seconds 60] [--output docs/bench-video.md]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _common import machine, publish, table

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT, FPS = 1920, 1080, 30
SCENE_SECONDS = 10


def make_clip(path: Path, seconds: int) -> Path:
    """Slow pans over the bundled photos (scaled up), a cut every SCENE_SECONDS."""
    import av

    photos = sorted((ROOT / "examples" / "images").glob("*.[jp][pn]g"))
    scenes = [
        np.asarray(Image.open(p).convert("RGB").resize((WIDTH + 480, HEIGHT + 270))) for p in photos
    ]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for n in range(seconds * FPS):
            scene = scenes[(n // (SCENE_SECONDS * FPS)) % len(scenes)]
            shift = (n % (SCENE_SECONDS * FPS)) // 2
            pixels = np.ascontiguousarray(
                scene[shift // 2 : shift // 2 + HEIGHT, shift : shift + WIDTH]
            )
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def every_frame(classifier, path: Path, batch_size: int = 16) -> tuple[float, int]:
    """opennsfw2's approach: decode every frame, classify every frame."""
    import av

    best, count, batch = 0.0, 0, []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            batch.append(frame.to_image())
            if len(batch) == batch_size:
                best = max(best, max(p.nsfw_score for p in classifier.predict(batch)))
                count += len(batch)
                batch = []
    if batch:
        best = max(best, max(p.nsfw_score for p in classifier.predict(batch)))
        count += len(batch)
    return best, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="opennsfw")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    from pixguard import Classifier

    classifier = Classifier.load(args.model, runtime=args.runtime)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        clip = make_clip(Path(folder) / "clip.mp4", args.seconds)
        made = time.perf_counter() - start
        classifier.predict([Image.new("RGB", (64, 64))])  # warm up
        start = time.perf_counter()
        baseline_max, baseline_frames = every_frame(classifier, clip)
        baseline_s = time.perf_counter() - start
        start = time.perf_counter()
        result = classifier.predict_video(clip)
        ours_s = time.perf_counter() - start
        result.raise_for_error()
        start = time.perf_counter()
        early = classifier.predict_video(clip, stop_at=0.0)
        early_s = time.perf_counter() - start
    rows = [
        [
            "every frame decoded and classified (opennsfw2's approach)",
            str(baseline_frames),
            f"{baseline_s:.1f}",
            f"{baseline_frames / baseline_s:.1f}",
            f"{baseline_max:.5f}",
            "1.0x",
        ],
        [
            "pixguard predict_video (1 fps + scene changes)",
            str(result.frames_classified),
            f"{ours_s:.1f}",
            f"{args.seconds / ours_s:.1f} s of video/s",
            f"{result.nsfw_score:.5f}",
            f"{baseline_s / ours_s:.1f}x",
        ],
        [
            "pixguard, --stop-at-block at score 0 (stops at frame 1)",
            str(early.frames_classified),
            f"{early_s:.2f}",
            "-",
            f"{early.nsfw_score:.5f}",
            f"{baseline_s / early_s:.0f}x",
        ],
    ]
    report = "\n".join(
        [
            "# Video moderation benchmark",
            "",
            f"Machine: {machine()}. Model {classifier.name} on {classifier.runtime_name}.",
            f"Clip: {args.seconds} s, {WIDTH}x{HEIGHT} H.264 at {FPS} fps, made by the script "
            f"in {made:.0f} s (pans over the bundled photos, a cut every {SCENE_SECONDS} s).",
            "",
            table(
                ["method", "frames classified", "seconds", "rate", "max nsfw_score", "speed-up"],
                rows,
            ),
            "",
            f"Difference in the maximum score: {abs(baseline_max - result.nsfw_score):.5f} "
            f"(every frame {baseline_max:.5f}, sampled {result.nsfw_score:.5f}, at "
            f"{result.timestamp:.1f} s).",
        ]
    )
    publish(report, args.output)


if __name__ == "__main__":
    main()
