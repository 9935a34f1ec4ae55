"""timm models in PyTorch eager mode, loaded through timm's own Hub/local loading."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import timm
import torch

from .._exceptions import ModelConfigError, ModelLoadError
from ..models import (
    ModelSpec,
    download_model_files,
    find_safe_weights,
    read_config,
    spec_from_config,
)
from ._base import RuntimeOutput

__all__ = ["TimmRuntime"]

logger = logging.getLogger(__name__)


class TimmRuntime:
    """Probabilities and the pooled embedding from one backbone pass.

    The backbone runs once (``forward_features``); the embedding is timm's
    ``forward_head(pre_logits=True)`` and the logits are the classifier applied to
    that same embedding.
    """

    def __init__(self, model: torch.nn.Module, spec: ModelSpec) -> None:
        classifier = model.get_classifier()
        if not isinstance(classifier, torch.nn.Module):
            raise ModelConfigError(
                f"architecture {spec.architecture} has no single classifier head",
                source=spec.name,
            )
        self.spec = spec
        self.model = model.eval()
        self._classifier = classifier

    @classmethod
    def load(cls, spec: ModelSpec) -> TimmRuntime:
        """Create the model named by ``spec`` with its pretrained safetensors weights."""
        if spec.source == "hf-hub":
            folder = download_model_files(spec.location, model_name=spec.name)
            timm_name = f"hf-hub:{spec.location}"
        elif spec.source == "local-dir":
            folder = Path(spec.location)
            timm_name = f"local-dir:{folder}"
        else:
            raise ModelConfigError(f"timm cannot load a {spec.source} model", source=spec.name)
        find_safe_weights(folder)
        resolved = spec_from_config(
            read_config(folder),
            name=spec.name,
            source=spec.source,
            location=spec.location,
            defaults=spec,
        )
        try:
            model = timm.create_model(timm_name, pretrained=True)
        except RuntimeError as exc:
            raise ModelLoadError(
                f"timm could not build the model: {exc}", source=spec.name
            ) from exc
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"could not load the weights: {exc}", source=spec.name) from exc
        if model.num_classes != len(resolved.label_names):
            raise ModelConfigError(
                f"the model has {model.num_classes} outputs but config.json names "
                f"{len(resolved.label_names)} labels",
                source=spec.name,
            )
        if resolved.embedding_dim is None:
            resolved = replace(resolved, embedding_dim=int(model.num_features))
        logger.info("loaded %s (%s) through timm", resolved.name, timm_name)
        return cls(model, resolved)

    def run(self, batch: np.ndarray) -> RuntimeOutput:
        with torch.inference_mode():
            inputs = torch.from_numpy(batch)
            features = self.model.forward_features(inputs)
            embeddings = self.model.forward_head(features, pre_logits=True)
            logits = self._classifier(embeddings)
            probabilities = logits.float().softmax(dim=-1)
        return RuntimeOutput(
            probabilities=probabilities.numpy().astype(np.float32, copy=False),
            embeddings=embeddings.float().numpy().astype(np.float32, copy=False),
        )
