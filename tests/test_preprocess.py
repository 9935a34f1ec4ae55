"""pixguard's preprocessing equals timm's evaluation transform, pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from timm.data import create_transform, resolve_data_config

from pixguard.images import Preprocessing, preprocess

CONFIGS = [
    {
        "input_size": (3, 384, 384),
        "interpolation": "bicubic",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
    },
    {
        "input_size": (3, 224, 224),
        "interpolation": "bilinear",
        "crop_pct": 0.875,
        "crop_mode": "center",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
    },
    {
        "input_size": (3, 192, 256),
        "interpolation": "bicubic",
        "crop_pct": 0.95,
        "crop_mode": "center",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
    },
    {
        "input_size": (3, 224, 224),
        "interpolation": "bicubic",
        "crop_pct": 0.9,
        "crop_mode": "squash",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
    },
]
SIZES = [(640, 480), (480, 640), (304, 456), (1000, 1000), (37, 23), (1, 1), (2048, 300)]


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: f"{c['crop_mode']}-{c['input_size'][1]}x{c['input_size'][2]}"
)
def test_preprocessing_equals_timm_create_transform(config):
    rng = np.random.default_rng(0)
    transform = create_transform(**config, is_training=False)
    pp = Preprocessing.from_timm_config(config)
    for width, height in SIZES:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        expected = transform(image).numpy()
        got = preprocess(image, pp)
        assert got.shape == expected.shape, (width, height)
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=f"{width}x{height}")


def test_defaults_follow_timm_resolve_data_config():
    """Keys a config omits take timm's defaults, and test-time keys are not used."""
    cfg = {"input_size": (3, 224, 224), "test_input_size": (3, 288, 288), "test_crop_pct": 1.0}
    resolved = resolve_data_config(pretrained_cfg=cfg)
    pp = Preprocessing.from_timm_config(cfg)
    assert pp.input_size == tuple(resolved["input_size"])
    assert pp.interpolation == resolved["interpolation"]
    assert pp.crop_pct == pytest.approx(resolved["crop_pct"])
    assert pp.mean == pytest.approx(resolved["mean"])


@pytest.mark.parametrize("bad", [(3, 0, 224), (1, 224, 224), (3, 224)])
def test_invalid_input_sizes_are_rejected(bad):
    with pytest.raises(ValueError, match="input_size"):
        Preprocessing(input_size=bad)


@pytest.mark.parametrize("channel_order", ["RGB", "BGR"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("pixel_range", [1.0, 255.0])
def test_normalisation_follows_the_formula(channel_order, layout, pixel_range):
    pp = Preprocessing(
        input_size=(3, 24, 32),
        mean=(0.48, 0.46, 0.41) if pixel_range == 1.0 else (104.0, 117.0, 123.0),
        std=(0.27, 0.26, 0.28) if pixel_range == 1.0 else (1.0, 1.0, 1.0),
        pixel_range=pixel_range,
        channel_order=channel_order,
        layout=layout,
    )
    pixels = np.random.default_rng(3).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    got = preprocess(Image.fromarray(pixels), pp)
    expected = pixels.astype(np.float64) * pixel_range / 255.0
    if channel_order == "BGR":
        expected = expected[:, :, ::-1]
    expected = (expected - np.asarray(pp.mean)) / np.asarray(pp.std)
    if layout == "NCHW":
        expected = expected.transpose(2, 0, 1)
    assert got.dtype == np.float32
    assert got.flags.c_contiguous
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)


def test_non_rgb_images_are_converted_first():
    pp = Preprocessing(input_size=(3, 16, 16))
    grey = Image.fromarray(np.full((16, 16), 200, np.uint8), mode="L")
    np.testing.assert_array_equal(preprocess(grey, pp), preprocess(grey.convert("RGB"), pp))
