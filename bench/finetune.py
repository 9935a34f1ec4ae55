"""Benchmark training speed: the linear probe on cached embeddings, and full
fine-tuning, in fp32 and bf16, side by side in one run.

The model is the seed model's architecture (vit_tiny_patch16_384) with random
weights; the speed does not depend on the weights.

    python bench/finetune.py [--steps 6] [--output docs/bench-finetune.md]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import machine, publish, table

os.environ.setdefault("HF_HUB_OFFLINE", "1")
BATCH = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps", type=int, default=6, help="optimizer steps timed per full fine-tuning row"
    )
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    import timm
    import torch

    from pixguard import Classifier
    from pixguard.testing import random_timm_folder
    from pixguard.train import FinetuneConfig, train_probe

    work = Path(tempfile.mkdtemp(prefix="pixguard-bench-ft-"))
    os.environ.setdefault("PIXGUARD_CACHE_DIR", str(work / "cache"))
    random_timm_folder(work / "base", label_names=("nsfw", "sfw"))
    rows = []

    # Embedding pass of the probe (done once per image, then cached).
    classifier = Classifier.load(work / "base", runtime="torch")
    images = [
        np.random.default_rng(i).integers(0, 256, (400, 400, 3), dtype=np.uint8) for i in range(64)
    ]
    start = time.perf_counter()
    embeddings = np.stack([p.embedding for p in classifier.predict(images, batch_size=BATCH)])
    embed_rate = len(images) / (time.perf_counter() - start)
    rows.append(["linear probe: embedding pass (once per image)", "fp32", f"{embed_rate:.1f}", "-"])

    # Head training on cached embeddings: 10,000 samples.
    x = np.repeat(embeddings, 160, axis=0)[:10_000] + np.random.default_rng(0).normal(
        0, 0.01, (10_000, embeddings.shape[1])
    ).astype(np.float32)
    y = (np.arange(len(x)) % 2).astype(np.int64)
    config = FinetuneConfig(mode="linear", epochs=3, patience=10)
    start = time.perf_counter()
    train_probe(x[:8000], y[:8000], x[8000:], y[8000:], 2, config, None)
    seconds = time.perf_counter() - start
    rows.append(
        [
            "linear probe: head on cached embeddings",
            "fp32",
            f"{8000 * config.epochs * 50 / seconds:,.0f}",
            f"{seconds:.1f} s for 3 epochs",
        ]
    )

    # Full fine-tuning: forward + backward + AdamW step on 384 px batches.
    batch = torch.randn(BATCH, 3, 384, 384)
    targets = torch.randint(0, 2, (BATCH,))
    base_rate = None
    for precision in ("fp32", "bf16"):
        net = timm.create_model("vit_tiny_patch16_384", num_classes=2).train()
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

        def step(net=net, optimizer=optimizer, loss_fn=loss_fn, precision=precision) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = loss_fn(net(batch), targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        step()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        rate = BATCH * args.steps / (time.perf_counter() - start)
        base_rate = base_rate or rate
        rows.append(
            [
                "full fine-tuning (all layers, batch 16)",
                precision,
                f"{rate:.1f}",
                f"{rate / base_rate:.2f}x fp32",
            ]
        )

    text = "\n".join(
        [f"Machine: {machine()}", "", table(["stage", "precision", "images/s", "note"], rows)]
    )
    publish(text, args.output)


if __name__ == "__main__":
    main()
