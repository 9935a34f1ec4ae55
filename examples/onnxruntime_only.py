"""Classify images with a pixguard ONNX export and plain onnxruntime.

Needs only numpy, Pillow and onnxruntime (not pixguard):

    pixguard export --model opennsfw --format onnx --output exported/opennsfw
    python examples/onnxruntime_only.py exported/opennsfw examples/images/rocket.jpg
"""

import argparse
import io
import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image


def preprocess(path, pp):
    """The model's own preprocessing, read from its config.json."""
    image = Image.open(path).convert("RGB")
    _, height, width = pp["input_size"]
    scale_w, scale_h = math.floor(width / pp["crop_pct"]), math.floor(height / pp["crop_pct"])
    w, h = image.size
    if pp["crop_mode"] == "squash":
        size = (scale_w, scale_h)
    else:  # shorter side to the scale size, aspect ratio kept (torchvision's Resize)
        size = (scale_w, int(scale_w * h / w)) if w <= h else (int(scale_h * w / h), scale_h)
    filters = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}
    image = image.resize(size, filters[pp["interpolation"]])
    left, top = round((image.width - width) / 2), round((image.height - height) / 2)
    image = image.crop((left, top, left + width, top + height))
    if pp["jpeg_roundtrip"]:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG")
        image = Image.open(io.BytesIO(buffer.getvalue()))
    x = np.asarray(image, np.float32) / np.float32(255 / pp["pixel_range"])
    if pp["channel_order"] == "BGR":
        x = x[:, :, ::-1]
    x = (x - np.float32(pp["mean"])) / np.float32(pp["std"])
    return x.transpose(2, 0, 1) if pp["layout"] == "NCHW" else x


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "folder", type=Path, help="a folder written by pixguard export --format onnx"
    )
    parser.add_argument("images", nargs="+", type=Path)
    args = parser.parse_args()

    config = json.loads((args.folder / "config.json").read_text())
    pp = config["pixguard"]["preprocessing"]  # the preprocessing travels with the weights
    session = ort.InferenceSession(str(args.folder / "model.onnx"))
    nsfw = [config["label_names"].index(label) for label in config["pixguard"]["nsfw_labels"]]
    for path in args.images:
        batch = np.stack([preprocess(path, pp)]).astype(np.float32)
        probabilities, embedding = session.run(None, {session.get_inputs()[0].name: batch})
        print(path, "nsfw_score", probabilities[0, nsfw].sum(), "embedding", embedding.shape)


if __name__ == "__main__":
    main()
