"""Runtimes, the parity gate and auto selection, on tiny and full-size models."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from pixguard import Classifier, RuntimeUnavailableError
from pixguard.images import preprocess
from pixguard.models import resolve_model
from pixguard.runtimes import (
    AUTO_ORDER,
    PARITY_TOLERANCE,
    ModelArtifacts,
    ParityReference,
    RuntimeOutput,
    cache_root,
    check_parity,
    compare_with_reference,
    cpu_precisions,
    open_on,
    open_reference,
    parity_images,
    parity_reference,
)
from pixguard.runtimes._parity import LABEL_MARGIN, NEAR_THRESHOLD


def test_parity_images_are_fixed_and_varied():
    first, second = parity_images(), parity_images()
    assert len(first) == 19  # 16 synthetic, the two bundled photos, open_nsfw's field
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, second, strict=True)
    )
    assert len({image.size for image in first}) > 8


@pytest.mark.parametrize("folder_fixture", ["tiny_vit_folder", "full_vit_folder"])
@pytest.mark.parametrize("kind", ["onnxruntime", "openvino"])
def test_fp32_runtimes_match_torch_eager(folder_fixture, kind, request, photos):
    folder = request.getfixturevalue(folder_fixture)
    torch_run = Classifier.load(folder, runtime="torch", precision="fp32")
    other = Classifier.load(folder, runtime=kind, precision="fp32")
    assert other.runtime.kind == kind
    assert other.parity is not None
    assert other.parity.max_abs_diff <= 1e-4
    expected = torch_run.predict(photos)
    got = other.predict(photos)
    for a, b in zip(expected, got, strict=True):
        assert b.nsfw_score == pytest.approx(a.nsfw_score, abs=1e-4)
        np.testing.assert_allclose(b.embedding, a.embedding, atol=1e-3)
        assert b.runtime == f"{kind}/fp32"


@pytest.mark.parametrize("folder_fixture", ["tiny_vit_folder", "full_vit_folder"])
def test_bf16_paths_report_their_parity(folder_fixture, request, photos):
    folder = request.getfixturevalue(folder_fixture)
    reference = Classifier.load(folder, runtime="torch").predict(photos)
    for kind in ("torch", "openvino"):
        if kind == "openvino" and "bf16" not in cpu_precisions():
            continue
        fast = Classifier.load(folder, runtime=kind, precision="bf16")
        assert fast.runtime.precision == "bf16"
        report = fast.parity
        assert report.images >= 18
        scores = [p.nsfw_score for p in fast.predict(photos)]
        measured = max(abs(a.nsfw_score - b) for a, b in zip(reference, scores, strict=True))
        # The gate's verdict agrees with what the photos show.
        if report.passed:
            assert measured <= 5 * PARITY_TOLERANCE


class _Skewed:
    """A runtime that shifts every score: it must fail the gate."""

    kind, precision = "test", "fp32"

    def __init__(self, inner, shift):
        self.spec, self.inner, self.shift = inner.spec, inner, shift

    def run(self, batch):
        out = self.inner.run(batch)
        p = np.clip(out.probabilities + np.array([self.shift, -self.shift], np.float32), 0, 1)
        return RuntimeOutput(probabilities=p, embeddings=out.embeddings)


def test_gate_rejects_paths_that_drift(tiny_vit_folder):
    reference = open_reference(ModelArtifacts(resolve_model(tiny_vit_folder)))
    assert check_parity(reference, reference, threshold=0.5).passed
    small = check_parity(reference, _Skewed(reference, 0.005), threshold=0.5)
    assert small.passed
    assert small.max_abs_diff == pytest.approx(0.005, abs=1e-3)
    large = check_parity(reference, _Skewed(reference, 0.05), threshold=0.5)
    assert not large.passed
    assert large.max_abs_diff > PARITY_TOLERANCE


def test_auto_never_picks_a_path_that_fails_the_gate(tiny_vit_folder, monkeypatch):
    from pixguard.runtimes import _verdicts

    original = _verdicts.check_parity

    def failing_unless_fp32_eager(reference, candidate, **kwargs):
        report = original(reference, candidate, **kwargs)
        if candidate.kind == "onnxruntime":
            return report
        return type(report)(**{**report.to_dict(), "passed": False})

    monkeypatch.setattr(_verdicts, "check_parity", failing_unless_fp32_eager)
    monkeypatch.setenv("PIXGUARD_CACHE_DIR", str(Path(cache_root()) / "auto-gate"))
    classifier = Classifier.load(tiny_vit_folder)  # runtime="auto"
    assert classifier.runtime_name == "onnxruntime/fp32"
    assert classifier.parity.passed
    order = [f"{k}/{p}" for k, p in AUTO_ORDER]
    assert order.index("onnxruntime/fp32") > order.index("openvino/bf16")


def test_auto_result_and_verdict_are_cached(tiny_vit_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("PIXGUARD_CACHE_DIR", str(tmp_path / "cache"))
    first = Classifier.load(tiny_vit_folder)
    verdicts = list((tmp_path / "cache" / "parity").glob("*.json"))
    assert verdicts
    assert all("report" in json.loads(v.read_text()) for v in verdicts)
    assert list((tmp_path / "cache" / "onnx").glob("timm-*/model.onnx"))

    from pixguard.runtimes import _verdicts

    def must_not_rerun(*args, **kwargs):
        raise AssertionError("a cached verdict must be reused")

    monkeypatch.setattr(_verdicts, "check_parity", must_not_rerun)
    second = Classifier.load(tiny_vit_folder)
    assert second.runtime_name == first.runtime_name


def test_opennsfw_runs_on_onnxruntime_and_openvino(photos):
    reference = Classifier.load("opennsfw", runtime="onnxruntime").predict(photos)
    openvino = Classifier.load("opennsfw", runtime="openvino", precision="fp32")
    for a, b in zip(reference, openvino.predict(photos), strict=True):
        assert b.nsfw_score == pytest.approx(a.nsfw_score, abs=1e-4)
        assert b.embedding.shape == (1024,)


def test_unavailable_combinations_are_clear_errors(tiny_vit_folder):
    with pytest.raises(RuntimeUnavailableError, match="int8 needs a model quantised"):
        Classifier.load(tiny_vit_folder, runtime="openvino", precision="int8")
    with pytest.raises(RuntimeUnavailableError, match="cannot run on torch"):
        Classifier.load("opennsfw", runtime="torch")
    with pytest.raises(RuntimeUnavailableError, match="unknown runtime"):
        Classifier.load(tiny_vit_folder, runtime="tensorflow")
    with pytest.raises(RuntimeUnavailableError, match="fp32 or int8"):
        Classifier.load(tiny_vit_folder, runtime="onnxruntime", precision="bf16")


def test_explicit_runtime_failing_the_gate_is_used_but_warned(tiny_vit_folder, monkeypatch, caplog):
    from pixguard.runtimes import _verdicts

    original = _verdicts.check_parity

    def always_fail(reference, candidate, **kwargs):
        report = original(reference, candidate, **kwargs)
        return type(report)(**{**report.to_dict(), "passed": False})

    monkeypatch.setattr(_verdicts, "check_parity", always_fail)
    monkeypatch.setenv("PIXGUARD_CACHE_DIR", str(Path(cache_root()) / "explicit-gate"))
    with caplog.at_level(logging.WARNING):
        classifier = Classifier.load(tiny_vit_folder, runtime="onnxruntime")
    assert classifier.runtime_name == "onnxruntime/fp32"
    assert not classifier.parity.passed
    assert "fails the parity gate" in caplog.text


def test_batch_of_one_has_no_padding(tiny_vit_folder):
    classifier = Classifier.load(tiny_vit_folder, runtime="openvino", precision="fp32")
    seen = []
    original = classifier.runtime.run
    classifier.runtime.run = lambda batch: seen.append(batch.shape[0]) or original(batch)
    classifier.classify(np.zeros((50, 60, 3), np.uint8))
    assert seen == [1]


def test_runtime_outputs_have_the_documented_shapes(tiny_vit_folder):
    artifacts = ModelArtifacts(resolve_model(tiny_vit_folder))
    batch = np.stack(
        [preprocess(image, artifacts.spec.preprocessing) for image in parity_images()[:3]]
    )
    for kind in ("torch", "onnxruntime", "openvino"):
        out = open_on(artifacts, kind, "fp32").run(batch)
        assert out.probabilities.shape == (3, 2)
        assert out.embeddings.shape == (3, 192)
        assert out.probabilities.dtype == np.float32
        np.testing.assert_allclose(out.probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_openvino_batches_match_single_images_in_any_memory_layout(tiny_vit_folder):
    """Batches run row by row across OpenVINO's streams: rows keep their order, and a
    strided (Fortran-ordered) batch gives the same scores as a contiguous one."""
    artifacts = ModelArtifacts(resolve_model(tiny_vit_folder))
    runtime = open_on(artifacts, "openvino", "fp32")
    batch = np.stack(
        [preprocess(image, artifacts.spec.preprocessing) for image in parity_images()[:7]]
    )
    singles = np.concatenate([runtime.run(batch[i : i + 1]).probabilities for i in range(7)])
    together = runtime.run(batch).probabilities
    strided = runtime.run(np.asfortranarray(batch)).probabilities
    np.testing.assert_allclose(together, singles, atol=1e-5)
    np.testing.assert_allclose(strided, singles, atol=1e-5)
    assert len({round(float(p), 4) for p in singles[:, 0]}) > 1  # the rows differ


class _Confident:
    """A runtime that sharpens another's scores, like a trained model that is sure
    of itself, and can shift its logit, as a lossy faster path does."""

    kind, precision = "test", "fp32"

    def __init__(self, inner, sharpness, shift=0.0):
        self.spec, self.inner = inner.spec, inner
        self.sharpness, self.shift = sharpness, shift

    def run(self, batch):
        out = self.inner.run(batch)
        (column,) = self.spec.nsfw_indices  # a two-class model: NSFW and the other
        p = np.clip(out.probabilities[:, column].astype(np.float64), 1e-12, 1 - 1e-12)
        logit = self.sharpness * np.log(p / (1 - p)) + self.shift
        nsfw = 1 / (1 + np.exp(-logit))
        columns = [nsfw, 1 - nsfw] if column == 0 else [1 - nsfw, nsfw]
        probabilities = np.stack(columns, axis=1).astype(np.float32)
        return RuntimeOutput(probabilities=probabilities, embeddings=out.embeddings)


def test_gate_catches_a_drift_that_shows_only_near_the_threshold(tiny_vit_folder):
    """A confident model scores every fixed image near 0 or 1, where a shifted logit
    barely moves the score; the bisection blends land near the threshold, where it
    shows."""
    tiny = open_reference(ModelArtifacts(resolve_model(tiny_vit_folder)))
    reference = _Confident(tiny, sharpness=4.0)
    drifting = _Confident(tiny, sharpness=4.0, shift=0.3)
    recorded = parity_reference(reference, threshold=0.5)
    base = len(parity_images())
    base_scores = np.asarray(recorded.scores[:base])
    assert np.all(np.abs(base_scores - 0.5) > 0.4)  # the fixed images alone: far from it
    on_base_only = compare_with_reference(
        ParityReference(blends=(), scores=recorded.scores[:base]), drifting, threshold=0.5
    )
    assert on_base_only.passed  # the old gate's blind spot
    assert on_base_only.near_threshold == 0

    report = check_parity(reference, drifting, threshold=0.5)
    assert not report.passed
    assert report.max_abs_diff > PARITY_TOLERANCE
    assert report.near_threshold >= 2
    assert report.images == base + len(recorded.blends)
    assert check_parity(reference, reference, threshold=0.5).passed


@pytest.fixture(scope="module")
def opennsfw_reference():
    return open_reference(ModelArtifacts(resolve_model("opennsfw")))


def test_opennsfw_gate_has_inputs_close_to_its_threshold_on_both_sides(opennsfw_reference):
    """open_nsfw scores every bundled photo and generated image far below its
    threshold; the shipped field scores above it, so the blends between them close in
    on the threshold from both sides."""
    threshold = opennsfw_reference.spec.threshold
    recorded = parity_reference(opennsfw_reference, threshold=threshold)
    base = len(parity_images())
    batch = recorded.batch(opennsfw_reference.spec.preprocessing)
    (nsfw,) = opennsfw_reference.spec.nsfw_indices
    measured = np.concatenate(
        [
            opennsfw_reference.run(batch[i : i + 8]).probabilities[:, nsfw]
            for i in range(0, len(batch), 8)
        ]
    ).astype(np.float64)
    np.testing.assert_allclose(measured, recorded.scores, atol=1e-6)  # the model's own scores
    assert np.all(measured[: base - 1] < threshold - NEAR_THRESHOLD)  # photos, generated
    assert measured[base - 1] > threshold  # the field made for open_nsfw
    blends = measured[base:]
    below, above = blends[blends < threshold], blends[blends >= threshold]
    assert threshold - below.max() < LABEL_MARGIN
    assert above.min() - threshold < LABEL_MARGIN
    decisive = blends[np.abs(blends - threshold) > LABEL_MARGIN]
    near = decisive[np.abs(decisive - threshold) <= NEAR_THRESHOLD]
    assert (near < threshold).any() and (near > threshold).any()


def test_opennsfw_gate_catches_a_small_drift_as_a_label_flip(opennsfw_reference):
    """A path whose log-odds drift a little: on the photos and generated images (all
    far from the threshold) the scores barely move and the gate passes it; the
    near-threshold blends change label."""
    threshold = opennsfw_reference.spec.threshold
    recorded = parity_reference(opennsfw_reference, threshold=threshold)
    base = len(parity_images())
    blends = np.asarray(recorded.scores[base:])
    decisive = blends[np.abs(blends - threshold) > LABEL_MARGIN]
    nearest = decisive[np.argmin(np.abs(decisive - threshold))]
    # Half as much again as carries the nearest decisive blend across the threshold.
    shift = 1.5 * (np.log(threshold / (1 - threshold)) - np.log(nearest / (1 - nearest)))
    assert abs(shift) < 0.5
    drifting = _Confident(opennsfw_reference, sharpness=1.0, shift=shift)

    on_base_only = compare_with_reference(
        ParityReference(blends=(), scores=recorded.scores[:base]), drifting, threshold=threshold
    )
    assert on_base_only.passed
    assert on_base_only.near_threshold == 0

    report = check_parity(opennsfw_reference, drifting, threshold=threshold)
    assert report.label_mismatches >= 1
    assert not report.passed
    assert check_parity(opennsfw_reference, opennsfw_reference, threshold=threshold).passed


def test_a_reference_recorded_on_other_inputs_is_refused(tiny_vit_folder):
    reference = open_reference(ModelArtifacts(resolve_model(tiny_vit_folder)))
    recorded = parity_reference(reference, threshold=0.5)
    stale = ParityReference(blends=recorded.blends, scores=recorded.scores[1:])
    with pytest.raises(RuntimeUnavailableError, match="export the model again"):
        compare_with_reference(stale, reference, threshold=0.5)


def test_parity_reference_round_trips_and_rebuilds_the_same_inputs(tiny_vit_folder):
    reference = open_reference(ModelArtifacts(resolve_model(tiny_vit_folder)))
    recorded = parity_reference(reference, threshold=0.5)
    assert recorded.blends  # the tiny model scores the fixed images on both sides
    again = ParityReference.from_dict(json.loads(json.dumps(recorded.to_dict())))
    assert again == recorded
    report = compare_with_reference(again, reference, threshold=0.5)
    assert report.passed
    assert report.max_abs_diff < 1e-6


def test_auto_moves_on_past_native_runtime_errors(tiny_vit_folder, monkeypatch, tmp_path):
    """onnxruntime's and OpenVINO's own exceptions, or a KeyError, mean that path
    cannot run here: auto tries the next one instead of giving up."""
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    from pixguard.runtimes import _onnx, _openvino

    def openvino_fails(self, batch):
        raise RuntimeError("Exception from src/inference/src/cpp/infer_request.cpp")

    def onnxruntime_fails(self, batch):
        raise InvalidArgument("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT")

    monkeypatch.setenv("PIXGUARD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_openvino.OpenVinoRuntime, "run", openvino_fails)
    monkeypatch.setattr(_onnx.OnnxRuntime, "run", onnxruntime_fails)
    classifier = Classifier.load(tiny_vit_folder)
    assert classifier.runtime.kind == "torch"

    def key_error(self, batch):
        raise KeyError("probabilities")

    monkeypatch.setenv("PIXGUARD_CACHE_DIR", str(tmp_path / "cache2"))
    monkeypatch.setattr(_onnx.OnnxRuntime, "run", key_error)
    assert Classifier.load(tiny_vit_folder).runtime.kind == "torch"
