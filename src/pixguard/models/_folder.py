"""The model-folder contract: ``config.json`` + weights, in timm's Hub layout.

pixguard's own fields sit under a ``"pixguard"`` key that timm ignores::

    {"architecture": "vit_tiny_patch16_384", "num_classes": 2, "num_features": 192,
     "pretrained_cfg": {"input_size": [3, 384, 384], ..., "label_names": ["NSFW", "SFW"]},
     "pixguard": {"nsfw_labels": ["NSFW"], "threshold": 0.5}}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._exceptions import ModelConfigError, ModelNotFoundError, UnsafeWeightsError
from ..images import Preprocessing
from ._spec import ModelSpec, WeightsSource

__all__ = [
    "CONFIG_NAME",
    "PICKLE_WEIGHT_SUFFIXES",
    "SAFE_WEIGHTS_NAME",
    "find_safe_weights",
    "read_config",
    "spec_from_config",
]

CONFIG_NAME = "config.json"
SAFE_WEIGHTS_NAME = "model.safetensors"
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl", ".pth.tar")
# Label names that mean "unsafe" when a config does not say which label is NSFW.
_IMPLICIT_NSFW_LABELS = frozenset({"nsfw", "unsafe"})


def read_config(folder: Path) -> dict[str, Any]:
    """Read and minimally validate ``folder/config.json``."""
    if not folder.exists():
        raise ModelNotFoundError("no such model folder", source=str(folder))
    if not folder.is_dir():
        raise ModelNotFoundError(
            "is not a folder; a model folder holds config.json and model.safetensors",
            source=str(folder),
        )
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise ModelConfigError(f"the folder has no {CONFIG_NAME}", source=str(folder))
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelConfigError(f"cannot parse {CONFIG_NAME}: {exc}", source=str(folder)) from exc
    if not isinstance(config, dict):
        raise ModelConfigError(f"{CONFIG_NAME} must hold a JSON object", source=str(folder))
    return config


def find_safe_weights(folder: Path) -> Path:
    """The safetensors weights of ``folder``; pickle-only folders are refused."""
    weights = folder / SAFE_WEIGHTS_NAME
    if weights.is_file():
        return weights
    pickled = sorted(p.name for p in folder.iterdir() if p.name.endswith(PICKLE_WEIGHT_SUFFIXES))
    if pickled:
        raise UnsafeWeightsError(
            f"only pickle-based weights found ({', '.join(pickled)}); pixguard loads "
            f"{SAFE_WEIGHTS_NAME} only, never unpickles. Convert them with safetensors.",
            source=str(folder),
        )
    raise ModelConfigError(f"the folder has no {SAFE_WEIGHTS_NAME}", source=str(folder))


def _label_names(config: Mapping[str, Any], pretrained_cfg: Mapping[str, Any]) -> tuple[str, ...]:
    labels = config.get("label_names") or pretrained_cfg.get("label_names")
    if isinstance(labels, Mapping):
        try:
            ordered = sorted(labels.items(), key=lambda item: int(item[0]))
        except ValueError as exc:
            raise ModelConfigError("label_names keys must be class indices") from exc
        labels = [name for _, name in ordered]
    if not labels or not all(isinstance(name, str) for name in labels):
        raise ModelConfigError(
            "config.json has no label_names; pixguard needs them to know which output is NSFW"
        )
    num_classes = config.get("num_classes", pretrained_cfg.get("num_classes"))
    if num_classes is not None and int(num_classes) != len(labels):
        raise ModelConfigError(
            f"num_classes is {num_classes} but label_names has {len(labels)} entries"
        )
    return tuple(labels)


def _nsfw_labels(
    own: Mapping[str, Any], labels: tuple[str, ...], default: tuple[str, ...] | None
) -> tuple[str, ...]:
    declared = own.get("nsfw_labels")
    if declared is not None:
        if isinstance(declared, str):
            declared = [declared]
        missing = [label for label in declared if label not in labels]
        if missing or not declared:
            raise ModelConfigError(
                f"pixguard.nsfw_labels {list(declared)} must name labels in {list(labels)}"
            )
        return tuple(declared)
    if default is not None and all(label in labels for label in default):
        return default
    implicit = tuple(label for label in labels if label.lower() in _IMPLICIT_NSFW_LABELS)
    if len(implicit) == 1:
        return implicit
    raise ModelConfigError(
        f"cannot tell which of the labels {list(labels)} is NSFW; add "
        '"pixguard": {"nsfw_labels": [...]} to config.json'
    )


def spec_from_config(
    config: Mapping[str, Any],
    *,
    name: str,
    source: WeightsSource,
    location: str,
    defaults: ModelSpec | None = None,
) -> ModelSpec:
    """Build a :class:`ModelSpec` from a timm-style ``config.json``.

    ``defaults`` (a registry entry) supplies pixguard fields a Hub config lacks, such
    as which label is NSFW; whatever the config states wins.
    """
    try:
        architecture = config["architecture"]
        pretrained_cfg = config.get("pretrained_cfg") or {}
        own = config.get("pixguard") or {}
        if not isinstance(pretrained_cfg, Mapping) or not isinstance(own, Mapping):
            raise ModelConfigError("pretrained_cfg and pixguard must be JSON objects")
        labels = _label_names(config, pretrained_cfg)
        nsfw = _nsfw_labels(own, labels, defaults.nsfw_labels if defaults else None)
        threshold = float(own.get("threshold", defaults.threshold if defaults else 0.5))
        preprocessing = (
            Preprocessing.from_dict(own["preprocessing"])
            if "preprocessing" in own
            else Preprocessing.from_timm_config(pretrained_cfg)
        )
        model_args = dict(config.get("model_args") or {})
        return ModelSpec(
            name=name,
            source=source,
            location=location,
            loader=str(own.get("loader", "timm")),
            architecture=str(architecture),
            preprocessing=preprocessing,
            label_names=labels,
            nsfw_labels=nsfw,
            threshold=threshold,
            embedding_dim=config.get("num_features"),
            description=defaults.description if defaults else "",
            model_args=model_args,
        )
    except ModelConfigError as exc:
        exc.source = exc.source or location
        raise
    except (KeyError, TypeError, ValueError) as exc:
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ModelConfigError(f"invalid config.json: {detail}", source=location) from exc
