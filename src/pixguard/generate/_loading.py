"""Loading an SD3 pipeline from a registry variant, a diffusers folder, or a
single-file checkpoint.

Single files (``sd3.5_large.safetensors`` and friends) carry the transformer and
the VAE, sometimes the text encoders; the configs, tokenizers and any missing
text encoders come from a *config*: a registry variant (its Hub repo), a Hub repo
id, or a local diffusers folder, which keeps the whole load offline.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._exceptions import GenerationError, ModelLoadError, ModelNotCachedError, UnsafeWeightsError
from ._variants import VARIANTS, Variant

__all__ = ["LoadedPipeline", "load_loras", "load_pipeline", "safetensors_location"]

_SINGLE_FILE_SUFFIX = ".safetensors"
_UNSAFE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_TRANSFORMER_PREFIX = "model.diffusion_model."

# (pipeline component, its key prefix inside an original SD3 single file, class)
_TEXT_ENCODERS = (
    ("text_encoder", "text_encoders.clip_l.", "CLIPTextModelWithProjection"),
    ("text_encoder_2", "text_encoders.clip_g.", "CLIPTextModelWithProjection"),
    ("text_encoder_3", "text_encoders.t5xxl.", "T5EncoderModel"),
)

# SD3.5 Large has 38 joint blocks; Medium (MMDiT-X) has a second attention in its
# first blocks. Large and Large Turbo share the architecture, so a Turbo file needs
# ``config="sd3.5-large-turbo"`` for its defaults.
_LARGE_MARKER = f"{_TRANSFORMER_PREFIX}joint_blocks.37.x_block.mlp.fc1.weight"
_MEDIUM_MARKER = f"{_TRANSFORMER_PREFIX}joint_blocks.0.x_block.attn2.qkv.weight"


@dataclass(frozen=True)
class LoadedPipeline:
    pipeline: Any
    name: str
    variant: Variant | None


def load_pipeline(
    source: str | os.PathLike[str],
    *,
    config: str | os.PathLike[str] | None = None,
    torch_dtype: Any,
    drop_t5: bool = False,
) -> LoadedPipeline:
    """The text-to-image pipeline named by ``source``: a registry variant, a local
    diffusers folder, or a ``.safetensors`` single-file checkpoint (with ``config``)."""
    text = os.fspath(source)
    spec = VARIANTS.get(text)
    path = Path(text)
    extra: dict[str, Any] = {"text_encoder_3": None, "tokenizer_3": None} if drop_t5 else {}
    if config is not None and not path.is_file():
        raise GenerationError(
            "a config is only for single-file checkpoints; variants and diffusers "
            "folders carry their own",
            source=text,
        )
    if spec is not None:
        return LoadedPipeline(
            _from_pretrained(spec.repo, text, torch_dtype, extra, hub=True), spec.name, spec
        )
    if (path / "model_index.json").is_file():
        extra |= _null_components(path)
        return LoadedPipeline(_from_pretrained(text, text, torch_dtype, extra), text, None)
    if path.is_file():
        return _from_single_file(path, config, torch_dtype, extra)
    raise GenerationError(
        f"unknown variant; use one of {', '.join(VARIANTS)}, a local diffusers folder, "
        f"or a {_SINGLE_FILE_SUFFIX} single-file checkpoint",
        source=text,
    )


def _from_pretrained(
    source: str, label: str, torch_dtype: Any, extra: dict[str, Any], *, hub: bool = False
) -> Any:
    from diffusers import StableDiffusion3Pipeline

    try:
        return StableDiffusion3Pipeline.from_pretrained(
            source, torch_dtype=torch_dtype, use_safetensors=True, **extra
        )
    except OSError as exc:
        if hub:
            # diffusers' own text points at a stack trace the user never sees.
            raise ModelNotCachedError(
                f"{source} is not in the Hugging Face cache, or the Hub cannot be reached. "
                f"It is gated: accept its terms at https://huggingface.co/{source}, log in "
                "with `hf auth login` (or set HF_TOKEN), then run once online; or pass a "
                "local diffusers folder or single-file checkpoint with --variant FOLDER",
                source=label,
            ) from exc
        raise ModelLoadError(
            f"cannot load the pipeline folder: {_first_line(exc)}", source=label
        ) from exc
    except ValueError as exc:
        raise ModelLoadError(f"cannot load the pipeline: {_first_line(exc)}", source=label) from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _null_components(folder: Path) -> dict[str, None]:
    """A folder saved without T5 records it as null; diffusers wants that said."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"not a diffusers folder: no readable model_index.json ({exc})", source=str(folder)
        ) from exc
    return {
        name: None
        for name in ("text_encoder_3", "tokenizer_3")
        if index.get(name) in (None, [None, None])
    }


def _checkpoint_keys(path: Path) -> set[str]:
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as handle:
            return set(handle.keys())
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise ModelLoadError(
            f"not a readable safetensors checkpoint: {exc}", source=str(path)
        ) from exc


def _infer_variant(keys: set[str], filename: str) -> Variant | None:
    """The variant an original-format SD3.5 file is, from its keys. Large and Large
    Turbo share the architecture; Stability's file names tell them apart."""
    if _LARGE_MARKER in keys:
        turbo = "turbo" in filename.lower()
        return VARIANTS["sd3.5-large-turbo" if turbo else "sd3.5-large"]
    if _MEDIUM_MARKER in keys:
        return VARIANTS["sd3.5-medium"]
    return None


def _config_variant(config: str) -> Variant | None:
    """A config naming a variant, by registry name or by its Hub repo id."""
    return VARIANTS.get(config) or next((v for v in VARIANTS.values() if v.repo == config), None)


_HUB_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


def _from_single_file(
    path: Path,
    config: str | os.PathLike[str] | None,
    torch_dtype: Any,
    extra: dict[str, Any],
) -> LoadedPipeline:
    import transformers
    from diffusers import StableDiffusion3Pipeline
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    label = str(path)
    if path.suffix.lower() in _UNSAFE_SUFFIXES:
        raise UnsafeWeightsError(
            "pickled checkpoints are never loaded; convert it to safetensors", source=label
        )
    if path.suffix.lower() != _SINGLE_FILE_SUFFIX:
        raise GenerationError(
            f"a single-file checkpoint must be {_SINGLE_FILE_SUFFIX}", source=label
        )
    keys = _checkpoint_keys(path)
    if not any(key.startswith(_TRANSFORMER_PREFIX) for key in keys):
        raise ModelLoadError(
            "no SD3 transformer in this file (expected original-format keys "
            f"under {_TRANSFORMER_PREFIX!r})",
            source=label,
        )
    if config is None:
        spec = _infer_variant(keys, path.name)
        if spec is None:
            raise GenerationError(
                "cannot tell which SD3 variant this checkpoint is; pass a config: a variant "
                f"name ({', '.join(VARIANTS)}), a Hub repo id, or a local diffusers folder",
                source=label,
            )
        config_source = spec.repo
    else:
        config_source = os.fspath(config)
        spec = _config_variant(config_source)
        if spec is not None:
            config_source = spec.repo
        elif not Path(config_source).is_dir() and not _HUB_REPO_ID.fullmatch(config_source):
            raise GenerationError(
                "the config is neither a variant, a Hub repo id (owner/name) nor an "
                "existing diffusers folder",
                source=config_source,
            )
    local = Path(config_source).is_dir()
    if local:
        extra |= _null_components(Path(config_source))
    # diffusers looks for text encoders in a config folder under its own weight
    # names, which transformers' folders do not use, so the ones the checkpoint
    # lacks are loaded here and handed over.
    for component, prefix, class_name in _TEXT_ENCODERS:
        if component in extra or any(key.startswith(prefix) for key in keys):
            continue
        try:
            extra[component] = getattr(transformers, class_name).from_pretrained(
                config_source, subfolder=component, torch_dtype=torch_dtype, use_safetensors=True
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"the checkpoint has no {component} and the config cannot provide it: {exc}",
                source=config_source,
            ) from exc
    try:
        pipeline = StableDiffusion3Pipeline.from_single_file(
            os.fspath(path),
            config=config_source,
            torch_dtype=torch_dtype,
            **({"local_files_only": True} if local else {}),
            **extra,
        )
    except (OSError, ValueError, KeyError, SingleFileComponentError) as exc:
        raise ModelLoadError(
            f"cannot load the single-file checkpoint: {exc}", source=label
        ) from exc
    # A fine-tune is recorded under its own file name, not the base variant's.
    return LoadedPipeline(pipeline, path.name, spec)


def safetensors_location(source: str | os.PathLike[str], what: str) -> tuple[str, str | None]:
    """Where diffusers should read ``what``'s weights from, as (folder or Hub id,
    file name or None), refusing anything but safetensors: a local file must be
    ``.safetensors``, a local folder must hold one. Hub ids pass through; their
    loads are made with ``use_safetensors=True``, which never falls back to pickle."""
    text = os.fspath(source)
    path = Path(text)
    if path.is_file():
        if path.suffix.lower() != _SINGLE_FILE_SUFFIX:
            raise UnsafeWeightsError(
                f"{what} weights must be {_SINGLE_FILE_SUFFIX}; pickled files are never loaded",
                source=text,
            )
        return str(path.parent), path.name
    if path.is_dir() and not any(path.rglob(f"*{_SINGLE_FILE_SUFFIX}")):
        pickled = [p.name for p in path.rglob("*") if p.suffix.lower() in _UNSAFE_SUFFIXES]
        reason = (
            f"only pickled weights ({', '.join(sorted(pickled))}), which are never loaded"
            if pickled
            else f"no {_SINGLE_FILE_SUFFIX} weights"
        )
        raise UnsafeWeightsError(f"the {what} folder holds {reason}", source=text)
    return text, None


def load_loras(pipeline: Any, loras: Sequence[tuple[str | os.PathLike[str], float]]) -> None:
    """Load LoRA adapters (diffusers/PEFT format, safetensors only), active together,
    each at its own weight."""
    names = []
    for position, (path, _) in enumerate(loras):
        name = f"lora{position}"
        location, weight_name = safetensors_location(path, "LoRA")
        try:
            pipeline.load_lora_weights(
                location, weight_name=weight_name, adapter_name=name, use_safetensors=True
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"cannot load the LoRA adapter: {exc}", source=os.fspath(path)
            ) from exc
        names.append(name)
    pipeline.set_adapters(names, adapter_weights=[float(weight) for _, weight in loras])
