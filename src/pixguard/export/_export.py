"""Export a model to a self-describing folder: ONNX, TorchScript or OpenVINO IR.

The folder keeps the model-folder contract (``config.json`` with labels, NSFW
labels, threshold and preprocessing) so ``--model DIR`` loads it anywhere, and its
scores are checked against the source model before the folder is written.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import ExportError, ImageError, ModelError, ParityError
from .._files import atomic_folder
from .._version import __version__
from ..images import DecodeLimits, ImageInput, load_image, preprocess
from ..models import ModelSpec, read_config, resolve_model, spec_from_config
from ..runtimes import (
    ARTIFACT_FILES,
    ModelArtifacts,
    ParityReference,
    ParityReport,
    compare_with_reference,
    open_on,
    open_reference,
    parity_reference,
    record_trusted_torchscript,
)

__all__ = ["EXPORT_FORMATS", "ExportResult", "export_model"]

EXPORT_FORMATS = ("onnx", "torchscript", "openvino")
#: fp32 exports must reproduce the source scores this closely.
FP32_EXPORT_TOLERANCE = 1e-4
#: Calibration images used for int8 at most; more adds time, not accuracy.
MAX_CALIBRATION_IMAGES = 128
_LOADER_OF_FORMAT = {"onnx": "onnx", "torchscript": "torchscript", "openvino": "openvino"}
_RUNTIME_OF_FORMAT = {"onnx": "onnxruntime", "torchscript": "torch", "openvino": "openvino"}


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    format: str
    precision: str
    parity: ParityReport
    """Scores of the exported model against the source model in fp32 eager."""


def _base_config(artifacts: ModelArtifacts) -> dict[str, Any]:
    spec = artifacts.spec
    if artifacts.folder is not None:
        return read_config(artifacts.folder)
    return {
        "architecture": spec.architecture,
        "num_classes": len(spec.label_names),
        "num_features": spec.embedding_dim,
        "label_names": list(spec.label_names),
    }


def _exported_config(
    artifacts: ModelArtifacts,
    fmt: str,
    precision: str,
    parity: ParityReport | None,
    reference: ParityReference | None,
) -> dict[str, Any]:
    spec = artifacts.spec
    config = _base_config(artifacts)
    config["label_names"] = list(spec.label_names)
    config.setdefault("num_features", spec.embedding_dim)
    own = dict(config.get("pixguard") or {})
    own.update(
        {
            "loader": _LOADER_OF_FORMAT[fmt],
            "nsfw_labels": list(spec.nsfw_labels),
            "threshold": spec.threshold,
            "preprocessing": spec.preprocessing.to_dict(),
            "export": {
                "format": fmt,
                "precision": precision,
                "source_model": spec.name,
                "pixguard_version": __version__,
                "parity": None if parity is None else parity.to_dict(),
                # The source's scores on the parity inputs: the export is checked
                # against them again on every machine that loads it.
                "parity_reference": None if reference is None else reference.to_dict(),
            },
        }
    )
    config["pixguard"] = own
    return config


class _CalibrationReader:
    """Feeds preprocessed calibration batches to onnxruntime's static quantiser."""

    def __init__(self, batches: list[np.ndarray], input_name: str) -> None:
        self._batches = iter(batches)
        self._input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._input_name: batch}


def _calibration_batches(spec: ModelSpec, images: Iterable[ImageInput]) -> list[np.ndarray]:
    pp = spec.preprocessing
    arrays: list[np.ndarray] = []
    for image in images:
        if len(arrays) >= MAX_CALIBRATION_IMAGES:
            break
        try:
            frames = load_image(image, limits=DecodeLimits(), min_size=pp.resize_size).frames
        except ImageError:
            continue  # a bad calibration file is skipped, like any bad input
        arrays.append(preprocess(frames[0], pp))
    if not arrays:
        raise ExportError("int8 export needs calibration images; none could be read")
    return [arrays[i][None] for i in range(len(arrays))]


#: Per-channel QDQ quantisation needs opset 13 or later.
_MIN_QUANT_OPSET = 13
#: Normalisation layers lose too much in int8; graphs with them (transformers)
#: quantise only their matrix products.
_MATRIX_OPS = ["Conv", "MatMul", "Gemm"]


def _quantize_int8(source: Path, target: Path, batches: list[np.ndarray]) -> None:
    """Static int8 (QDQ) quantisation with onnxruntime's quantiser, calibrated on
    real images. OpenVINO and onnxruntime both run the resulting graph in int8.

    Weights are quantised to 7 bits (``reduce_range``): x86 CPUs without VNNI
    (AVX2, early AVX-512) multiply uint8 activations by int8 weights in pairs summed
    into int16, which saturates with full-range weights, so the same graph scored
    differently there (up to 0.2 on a small ViT) than on VNNI CPUs. With 7-bit
    weights no pair can saturate and every x86 CPU computes the graph as written,
    so a verdict measured on one machine speaks for the others."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(source))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < _MIN_QUANT_OPSET:
        model = version_converter.convert_version(model, _MIN_QUANT_OPSET)
    has_norm_layers = any(node.op_type == "LayerNormalization" for node in model.graph.node)
    upgraded = target.with_name("upgraded.onnx")
    prepared = target.with_name("prepared.onnx")
    onnx.save(model, str(upgraded))
    quant_pre_process(str(upgraded), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(target),
        _CalibrationReader(batches, model.graph.input[0].name),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        reduce_range=True,
        op_types_to_quantize=_MATRIX_OPS if has_norm_layers else None,
    )
    upgraded.unlink()
    prepared.unlink()


def _write_weights(
    artifacts: ModelArtifacts,
    fmt: str,
    precision: str,
    folder: Path,
    calibration: Sequence[np.ndarray] | None,
) -> None:
    if fmt == "torchscript":
        if artifacts.loader != "timm":
            raise ExportError("TorchScript export needs a timm model", source=artifacts.spec.name)
        artifacts.torch_fp32().export_torchscript(folder / ARTIFACT_FILES["torchscript"])
        return
    onnx_source = artifacts.onnx_path()
    onnx_target = folder / ARTIFACT_FILES["onnx"]
    if precision == "int8":
        _quantize_int8(onnx_source, onnx_target, list(calibration or []))
    else:
        shutil.copyfile(onnx_source, onnx_target)
    if fmt == "openvino":
        import openvino

        model = openvino.convert_model(str(onnx_target))
        openvino.save_model(model, str(folder / ARTIFACT_FILES["openvino"]), compress_to_fp16=False)
        onnx_target.unlink()


def export_model(
    model: str | os.PathLike[str],
    *,
    format: str,
    output: str | os.PathLike[str],
    precision: str = "fp32",
    calibration: Iterable[ImageInput] | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export ``model`` (a registry name, folder or ``hf-hub:``) to ``output``.

    ``precision="int8"`` quantises the ONNX graph statically on ``calibration``
    images (real ones, of the kind the model will see) and must pass the parity gate.
    The folder is written under a temporary name and renamed into place when
    complete and checked.
    """
    if format not in EXPORT_FORMATS:
        raise ExportError(f"unknown format {format!r} (use {', '.join(EXPORT_FORMATS)})")
    if precision not in ("fp32", "int8"):
        raise ExportError("exports are fp32 or int8 (bf16 is a runtime choice: --precision bf16)")
    if precision == "int8" and format == "torchscript":
        raise ExportError("int8 export is for onnx and openvino")
    if precision == "int8" and calibration is None:
        raise ExportError("int8 export needs calibration images (--calibration DIR)")
    target = Path(output)
    if target.exists() and not overwrite:
        raise ExportError(
            "the output folder exists (use --overwrite to replace it)", source=str(target)
        )
    if target.exists():
        _check_replaceable(target)

    artifacts = ModelArtifacts(resolve_model(model))
    batches = (
        _calibration_batches(artifacts.spec, calibration)
        if precision == "int8" and calibration is not None
        else None
    )
    with atomic_folder(target, replace=True) as scratch:
        _write_weights(artifacts, format, precision, scratch, batches)
        config_path = scratch / "config.json"
        config_path.write_text(
            json.dumps(_exported_config(artifacts, format, precision, None, None), indent=2)
        )
        exported = ModelArtifacts(
            spec_from_config(
                read_config(scratch), name=str(target), source="local-dir", location=str(scratch)
            ),
            trust_torchscript=True,  # written just now, by this function
        )
        candidate = open_on(exported, _RUNTIME_OF_FORMAT[format], precision)
        threshold = artifacts.spec.threshold
        reference = parity_reference(open_reference(artifacts), threshold=threshold)
        tolerance = FP32_EXPORT_TOLERANCE if precision == "fp32" else None
        report = compare_with_reference(
            reference,
            candidate,
            threshold=threshold,
            **({"tolerance": tolerance} if tolerance is not None else {}),
        )
        if not report.passed:
            raise ParityError(
                f"the {format}/{precision} export differs from the source model by up to "
                f"{report.max_abs_diff:.5f} (allowed {report.tolerance}), "
                f"{report.label_mismatches} label flips; nothing was written",
                source=artifacts.spec.name,
            )
        config_path.write_text(
            json.dumps(_exported_config(artifacts, format, precision, report, reference), indent=2)
        )
        if format == "torchscript":
            record_trusted_torchscript(scratch / ARTIFACT_FILES["torchscript"])
    return ExportResult(folder=target, format=format, precision=precision, parity=report)


def _check_replaceable(target: Path) -> None:
    """``--overwrite`` replaces only a folder that pixguard export wrote: one whose
    ``config.json`` records an export. Anything else is left alone."""
    try:
        exported = target.is_dir() and bool(
            (read_config(target).get("pixguard") or {}).get("export")
        )
    except ModelError:
        exported = False
    if not exported:
        raise ExportError(
            "--overwrite replaces only a folder written by pixguard export (its config.json "
            "records the export); this one is not, so it was left as it is",
            source=str(target),
        )
