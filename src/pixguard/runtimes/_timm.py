"""timm models in PyTorch eager mode, loaded through timm's own Hub/local loading."""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from .._exceptions import ModelConfigError, ModelLoadError
from ..models import ModelSpec, find_safe_weights, locate_folder, read_config, spec_from_config
from ._base import RuntimeOutput

__all__ = ["ONNX_OPSET", "ProbabilitiesAndEmbedding", "TimmRuntime", "TorchScriptRuntime"]

ONNX_OPSET = 17

#: A timm model. timm adds ``forward_features``, ``get_classifier``, ``num_features``
#: and friends to every architecture, but torch's typing sees each attribute of a
#: Module as ``Tensor | Module``, so these models are typed as ``Any``.
TimmModel = Any

logger = logging.getLogger(__name__)


class ProbabilitiesAndEmbedding(torch.nn.Module):
    """A timm classifier as ``x -> (probabilities, embedding)`` from one backbone pass.

    The embedding is timm's ``forward_head(pre_logits=True)``; the logits are the
    classifier applied to that same embedding. Export traces this module, so every
    runtime computes exactly the same two outputs.
    """

    def __init__(self, model: TimmModel) -> None:
        super().__init__()
        self.model: TimmModel = model
        self.classifier: TimmModel = model.get_classifier()

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_features(pixels)
        embedding = self.model.forward_head(features, pre_logits=True)
        logits = self.classifier(embedding)
        return logits.float().softmax(dim=-1), embedding.float()


class TimmRuntime:
    """timm in PyTorch eager mode, fp32 or bf16 (CPU autocast)."""

    kind = "torch"

    def __init__(self, model: TimmModel, spec: ModelSpec, *, precision: str = "fp32") -> None:
        if not isinstance(model.get_classifier(), torch.nn.Module):
            raise ModelConfigError(
                f"architecture {spec.architecture} has no single classifier head",
                source=spec.name,
            )
        if precision not in ("fp32", "bf16"):
            raise ModelConfigError(
                f"the torch runtime runs fp32 or bf16, not {precision}", source=spec.name
            )
        self.spec = spec
        self.precision = precision
        self.model: TimmModel = model.eval()
        self.module = ProbabilitiesAndEmbedding(self.model).eval()

    @classmethod
    def load(cls, spec: ModelSpec, *, precision: str = "fp32") -> TimmRuntime:
        """Create the model named by ``spec`` with its pretrained safetensors weights.

        Hub models are fetched into the huggingface_hub cache first; timm then loads
        the exact snapshot folder that was checked (``local-dir:``), where it always
        prefers ``model.safetensors``. Loading by ``hf-hub:`` instead would let a
        config's ``hf_hub_filename`` point timm at another, possibly pickled, file.
        """
        folder = locate_folder(spec)
        find_safe_weights(folder)
        resolved = spec_from_config(
            read_config(folder),
            name=spec.name,
            source=spec.source,
            location=spec.location,
            defaults=spec,
        )
        timm_name = f"local-dir:{folder}"
        try:
            model: TimmModel = timm.create_model(timm_name, pretrained=True)
        except Exception as exc:
            raise ModelLoadError(
                f"timm could not build the model ({type(exc).__name__}: {exc})", source=spec.name
            ) from exc
        if model.num_classes != len(resolved.label_names):
            raise ModelConfigError(
                f"the model has {model.num_classes} outputs but config.json names "
                f"{len(resolved.label_names)} labels",
                source=spec.name,
            )
        if resolved.embedding_dim is None:
            resolved = replace(resolved, embedding_dim=int(model.num_features))
        logger.info("loaded %s (%s) through timm", resolved.name, timm_name)
        return cls(model, resolved, precision=precision)

    def export_onnx(self, path: Path, *, opset: int = ONNX_OPSET) -> None:
        """Write the (probabilities, embedding) graph as ONNX with a dynamic batch axis."""
        example = torch.zeros(1, *self.spec.preprocessing.input_size)
        with warnings.catch_warnings():
            # The TorchScript-based exporter is deprecated upstream, but is fast and
            # needs no extra dependency; its traces are checked by the parity gate.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                self.module,
                (example,),
                str(path),
                input_names=["pixel_values"],
                output_names=["probabilities", "embedding"],
                dynamic_axes={
                    name: {0: "batch"} for name in ("pixel_values", "probabilities", "embedding")
                },
                opset_version=opset,
                dynamo=False,
            )

    def export_torchscript(self, path: Path) -> None:
        example = torch.zeros(1, *self.spec.preprocessing.input_size)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(self.module, example, check_trace=False)
        torch.jit.save(traced, str(path))

    def run(self, batch: np.ndarray) -> RuntimeOutput:
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"),
        ):
            probabilities, embeddings = self.module(torch.from_numpy(batch))
        return RuntimeOutput(
            probabilities=probabilities.numpy().astype(np.float32, copy=False),
            embeddings=embeddings.numpy().astype(np.float32, copy=False),
        )


class TorchScriptRuntime:
    """An exported TorchScript graph (``pixguard export --format torchscript``).

    A TorchScript archive is a program: loading it runs code the archive defines
    (PyTorch's security guidance treats it as untrusted code, like pickle). The
    loaders open one only when this machine's ``pixguard export`` wrote it, or when
    the caller passes ``trust_torchscript=True`` (``--trust-torchscript``).
    """

    kind = "torch"

    def __init__(self, path: Path, spec: ModelSpec, *, precision: str = "fp32") -> None:
        if precision != "fp32":
            raise ModelConfigError("TorchScript models run in fp32", source=spec.name)
        try:
            self.module = torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as exc:
            raise ModelLoadError(f"cannot load TorchScript: {exc}", source=spec.name) from exc
        self.spec = spec
        self.precision = precision

    def run(self, batch: np.ndarray) -> RuntimeOutput:
        with torch.inference_mode():
            probabilities, embeddings = self.module(torch.from_numpy(batch))
        return RuntimeOutput(
            probabilities=probabilities.float().numpy(), embeddings=embeddings.float().numpy()
        )
