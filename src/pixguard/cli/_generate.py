"""``pixguard generate``: text-to-image behind the safety gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from .._exceptions import ModelError, PixguardError
from ..models import DEFAULT_MODEL
from ._common import EXIT_SOME_INPUTS_FAILED, fail, progress_bar, stderr

__all__ = ["generate_command"]


def _lora_spec(item: str) -> tuple[str, float]:
    """``PATH[:WEIGHT]``; a path may itself contain colons."""
    path, separator, weight = item.rpartition(":")
    if separator:
        try:
            return path, float(weight)
        except ValueError:
            pass
    return item, 1.0


def generate_command(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    variant: Annotated[
        str,
        typer.Option(
            help="sd3.5-large, sd3.5-large-turbo, sd3.5-medium, a diffusers folder, or a .safetensors single-file checkpoint."
        ),
    ] = "sd3.5-large-turbo",
    config: Annotated[
        str | None,
        typer.Option(
            help="For a single-file checkpoint: a variant name, Hub repo id or local diffusers folder with its configs and text encoders."
        ),
    ] = None,
    negative_prompt: Annotated[str | None, typer.Option()] = None,
    steps: Annotated[
        int | None, typer.Option(help="Default: the variant's recommendation.")
    ] = None,
    guidance: Annotated[
        float | None, typer.Option(help="CFG scale; default: the variant's recommendation.")
    ] = None,
    width: Annotated[int | None, typer.Option()] = None,
    height: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option(help="Same seed and parameters, same image.")] = None,
    num_images: Annotated[int, typer.Option(min=1)] = 1,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the PNGs.")] = Path(
        "generated"
    ),
    safety_model: Annotated[
        str, typer.Option(help="The classifier that gates every image.")
    ] = DEFAULT_MODEL,
    safety_threshold: Annotated[
        float | None, typer.Option(help="Default: the safety model's threshold.")
    ] = None,
    safety_action: Annotated[
        Literal["block", "blur", "allow-flagged"],
        typer.Option(help="block, blur, or allow-flagged (an explicit, logged opt-out)."),
    ] = "block",
    blur_scope: Annotated[
        Literal["whole", "region"],
        typer.Option(
            help="With --safety-action blur: whole, or region (only where the explanation points; whole if that is not enough)."
        ),
    ] = "whole",
    retry_blocked: Annotated[
        int, typer.Option(min=0, help="Extra seeds to try in place of blocked images.")
    ] = 0,
    screen: Annotated[
        list[str] | None,
        typer.Option(help="Refuse prompts with this term (or re:REGEX); repeatable."),
    ] = None,
    lora: Annotated[
        list[str] | None,
        typer.Option(help="LoRA adapter PATH[:WEIGHT] (diffusers/PEFT format); repeatable."),
    ] = None,
    init_image: Annotated[Path | None, typer.Option(help="img2img: start from this image.")] = None,
    strength: Annotated[
        float, typer.Option(help="img2img/inpaint: how much to change (0-1].")
    ] = 0.6,
    mask: Annotated[
        Path | None, typer.Option(help="Inpaint where this mask is white (needs --init-image).")
    ] = None,
    control: Annotated[
        str | None,
        typer.Option(help="ControlNet guidance: canny, blur or depth (needs --control-image)."),
    ] = None,
    control_image: Annotated[
        Path | None,
        typer.Option(
            help="The image to follow (screened by the safety model); for depth, the depth map unless --depth-model."
        ),
    ] = None,
    control_model: Annotated[
        str | None,
        typer.Option(
            help="ControlNet folder or Hub repo (default: Stability's SD3.5 Large ControlNet for the kind)."
        ),
    ] = None,
    control_scale: Annotated[
        float, typer.Option(min=0.0, help="ControlNet strength (0: none).")
    ] = 1.0,
    depth_model: Annotated[
        str | None,
        typer.Option(
            help="A transformers depth-estimation model (folder or Hub repo) for --control depth."
        ),
    ] = None,
    drop_t5: Annotated[bool, typer.Option(help="Skip the T5 text encoder (less memory).")] = False,
    cpu_offload: Annotated[
        bool, typer.Option(help="Model CPU offload (GPU memory saver).")
    ] = False,
    vae_tiling: Annotated[bool, typer.Option()] = False,
    compile_transformer: Annotated[
        bool, typer.Option("--compile", help="torch.compile the transformer.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cuda, mps or cpu.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16.")] = "auto",
    output_format: Annotated[
        str, typer.Option("--format", "-f", help="text or json (one object per image).")
    ] = "text",
) -> None:
    """Generate images with Stable Diffusion 3.5; every image passes pixguard's gate
    before it is written, and the gate fails closed."""
    from ..generate import Generator

    adapters = [_lora_spec(item) for item in lora or []]
    try:
        generator = Generator.load(
            variant,
            config=config,
            safety_model=safety_model,
            safety_threshold=safety_threshold,
            safety_action=safety_action,
            blur_scope=blur_scope,
            device=device,
            dtype=dtype,
            drop_t5=drop_t5,
            cpu_offload=cpu_offload,
            vae_tiling=vae_tiling,
            prompt_screen=screen or [],
            loras=adapters,
            compile=compile_transformer,
        )
        with progress_bar(stderr.is_terminal, "generating") as bar:
            task = bar.add_task("steps", total=None)
            results = generator(
                prompt,
                negative_prompt=negative_prompt,
                steps=steps,
                guidance=guidance,
                width=width,
                height=height,
                seed=seed,
                num_images=num_images,
                output_dir=output,
                retry_blocked=retry_blocked,
                on_step=lambda done, total: bar.update(task, completed=done, total=total),
                init_image=init_image,
                strength=strength,
                mask=mask,
                control=control,
                control_image=control_image,
                control_scale=control_scale,
                control_model=control_model,
                depth_model=depth_model,
            )
    except ModelError as exc:
        # The safety model is chosen here with --safety-model, not --model.
        if exc.source != variant and "`--model" in exc.message:
            exc.message = exc.message.replace("`--model", "`--safety-model")
        raise fail(exc) from None
    except (PixguardError, ValueError) as exc:
        raise fail(exc if isinstance(exc, PixguardError) else PixguardError(str(exc))) from None
    for result in results:
        if output_format == "json":
            typer.echo(json.dumps(result.to_dict()))
        else:
            score = "-" if result.gate.nsfw_score is None else f"{result.gate.nsfw_score:.3f}"
            typer.echo(
                f"seed {result.seed}: {result.gate.decision} (nsfw {score}) {result.path or ''}".rstrip()
            )
    if sum(r.path is not None for r in results) < num_images:
        raise typer.Exit(EXIT_SOME_INPUTS_FAILED)
