"""``pixguard lora train``: LoRA adapters for Stable Diffusion 3.5."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .._exceptions import PixguardError
from ..models import DEFAULT_MODEL
from ._common import fail, progress_bar, stderr

__all__ = ["lora_app"]

lora_app = typer.Typer(
    help="Train LoRA adapters for Stable Diffusion 3.5 (screened data, gated validation).",
    no_args_is_help=True,
)


def _blocks(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(
            "a comma-separated list of block numbers", param_hint="--blocks"
        ) from None


@lora_app.command("train")
def train_command(
    data: Annotated[
        Path,
        typer.Argument(
            help="Folder of images with .txt captions beside them, or a .jsonl/.csv manifest (image, caption)."
        ),
    ],
    variant: Annotated[
        str,
        typer.Option(
            help="sd3.5-medium, sd3.5-large, a diffusers folder, or a .safetensors single file."
        ),
    ] = "sd3.5-medium",
    config: Annotated[
        str | None,
        typer.Option(
            help="For a single-file checkpoint: a variant, Hub repo id or local diffusers folder."
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the LoRA and its logs.")
    ] = Path("lora"),
    rank: Annotated[int, typer.Option(min=1)] = 16,
    alpha: Annotated[float | None, typer.Option(help="LoRA alpha (default: the rank).")] = None,
    targets: Annotated[
        str, typer.Option(help="attn, attn+ff, or comma-separated transformer module names.")
    ] = "attn",
    blocks: Annotated[
        str | None, typer.Option(help="Only these transformer blocks, e.g. 0,1,2 (default: all).")
    ] = None,
    steps: Annotated[int, typer.Option(min=1)] = 1000,
    lr: Annotated[float, typer.Option(help="Learning rate (AdamW).")] = 1e-4,
    batch_size: Annotated[int, typer.Option(min=1)] = 1,
    grad_accumulation: Annotated[int, typer.Option(min=1)] = 1,
    resolution: Annotated[
        int,
        typer.Option(
            min=16, help="Side of the square pixel budget; images are bucketed by aspect ratio."
        ),
    ] = 1024,
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16 (CUDA).")] = "auto",
    gradient_checkpointing: Annotated[bool, typer.Option()] = False,
    drop_t5: Annotated[bool, typer.Option(help="Skip the T5 text encoder (less memory).")] = False,
    cache_latents: Annotated[
        bool,
        typer.Option(help="Encode every image once (kept per image, paired with its caption)."),
    ] = False,
    validation_prompt: Annotated[str | None, typer.Option()] = None,
    validation_every: Annotated[
        int, typer.Option(min=0, help="Steps between validation images (0: at the end).")
    ] = 0,
    checkpoint_every: Annotated[int, typer.Option(min=1)] = 100,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--no-resume", help="Continue from the latest checkpoint in --output."
        ),
    ] = True,
    safety_model: Annotated[
        str,
        typer.Option(help="The classifier that screens the training images and gates validation."),
    ] = DEFAULT_MODEL,
    safety_threshold: Annotated[
        float | None, typer.Option(help="Default: the safety model's threshold.")
    ] = None,
    allow_flagged: Annotated[
        bool,
        typer.Option(help="Train on images the safety model flags (an explicit, logged opt-out)."),
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cuda, mps or cpu.")] = "auto",
) -> None:
    """Train a LoRA for SD3.5. Every training image is screened by the safety model
    first (flagged images stop the run); validation images pass the fail-closed gate.
    Rerunning the same command resumes from the latest checkpoint."""
    from ..classify import Classifier
    from ..generate.lora import LoraTrainConfig, train_lora

    if allow_flagged:
        stderr.print(
            "[bold red]WARNING[/] --allow-flagged: images the safety model flags WILL be trained on"
        )
    try:
        settings = LoraTrainConfig(
            rank=rank,
            alpha=alpha,
            targets=targets,
            blocks=_blocks(blocks),
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            grad_accumulation=grad_accumulation,
            resolution=resolution,
            precision=precision,
            gradient_checkpointing=gradient_checkpointing,
            drop_t5=drop_t5,
            cache_latents=cache_latents,
            validation_prompt=validation_prompt,
            validation_every=validation_every,
            checkpoint_every=checkpoint_every,
            seed=seed,
        )
        classifier = Classifier.load(safety_model, threshold=safety_threshold)
    except PixguardError as exc:
        raise fail(exc) from None
    with progress_bar(stderr.is_terminal, "LoRA") as bar:
        task = bar.add_task("train", total=steps)

        def on_progress(event: dict[str, Any]) -> None:
            stage = event["stage"]
            if stage == "training":
                bar.update(
                    task,
                    completed=event["step"],
                    description=f"step {event['step']}/{event['steps']} loss {event['loss']:.4f}",
                )
            elif stage == "validation":
                decisions = ", ".join(image["decision"] for image in event["images"])
                bar.console.print(f"validation at step {event['step']}: {decisions}")
            else:
                bar.update(task, description=f"{stage} {event.get('images', '')} images")

        try:
            result = train_lora(
                data,
                variant=variant,
                output=output,
                config=settings,
                model_config=config,
                classifier=classifier,
                allow_flagged=allow_flagged,
                resume=resume,
                device=device,
                progress=on_progress,
            )
        except PixguardError as exc:
            raise fail(exc) from None
    resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
    final = f", last loss {result.losses[-1]:.4f}" if result.losses else ""
    typer.echo(
        f"wrote {result.weights} ({result.steps} steps{resumed}{final}); "
        f"train.log, loss.png and screening.json in {result.output}"
    )
