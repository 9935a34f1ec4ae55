"""``pixguard finetune``, ``evaluate`` and ``calibrate``: custom policies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from .._exceptions import PixguardError
from ..classify import Classifier
from ..models import DEFAULT_MODEL
from ..train import FinetuneConfig, calibrate, evaluate, finetune
from ._common import ModelOption, fail, print_table, progress_bar, stderr

__all__ = ["register"]

NsfwClassOption = Annotated[
    list[str] | None,
    typer.Option("--nsfw-class", help="A dataset class that counts as NSFW (repeat for several)."),
]


def _report_table(metrics: dict[str, Any]) -> Table:
    table = Table(title=f"{metrics.get('model', '')} at threshold {metrics['threshold']:.3f}")
    for column in ("class", "precision", "recall", "f1", "support"):
        table.add_column(column)
    for name, row in metrics["classes"].items():
        table.add_row(
            name,
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
            str(row["support"]),
        )
    auc = metrics["roc_auc"]
    table.caption = f"accuracy {metrics['accuracy']:.3f}, ROC-AUC {'n/a' if auc is None else f'{auc:.3f}'}, {metrics['samples']} images"
    return table


def finetune_command(
    data: Annotated[
        Path, typer.Argument(help="ImageFolder, or a .csv/.jsonl manifest of path,label.")
    ],
    base: Annotated[
        str, typer.Option(help="Base model: registered name, folder or hf-hub:owner/repo.")
    ] = DEFAULT_MODEL,
    mode: Annotated[
        Literal["linear", "full"],
        typer.Option(help="linear (frozen backbone, cached embeddings) or full."),
    ] = "linear",
    output: Annotated[Path, typer.Option("--output", "-o", help="Model folder to write.")] = Path(
        "finetuned"
    ),
    nsfw_class: NsfwClassOption = None,
    val: Annotated[
        Path | None, typer.Option(help="A separate validation set (default: a stratified split).")
    ] = None,
    test: Annotated[
        Path | None,
        typer.Option(
            help="A held-out test set for the reported metrics (default: the validation split, which also stops training early)."
        ),
    ] = None,
    val_fraction: Annotated[
        float, typer.Option(help="Share of DATA held out for validation.")
    ] = 0.2,
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float | None, typer.Option(help="Default: 1e-2 linear, 1e-4 full.")] = None,
    weight_decay: Annotated[float, typer.Option()] = 0.05,
    warmup_epochs: Annotated[float, typer.Option()] = 1.0,
    label_smoothing: Annotated[float, typer.Option()] = 0.1,
    grad_accumulation: Annotated[int, typer.Option(min=1)] = 1,
    unfreeze_blocks: Annotated[
        int | None, typer.Option(help="full: train only the last N blocks (and the head).")
    ] = None,
    patience: Annotated[
        int,
        typer.Option(min=1, help="Stop after this many epochs without a better validation score."),
    ] = 3,
    precision: Annotated[
        Literal["auto", "fp32", "bf16"], typer.Option(help="auto, fp32 or bf16 (autocast).")
    ] = "auto",
    seed: Annotated[int, typer.Option()] = 0,
    threshold: Annotated[
        float, typer.Option(help="Threshold written into the model (calibrate it later).")
    ] = 0.5,
    resume: Annotated[
        bool, typer.Option(help="Continue from OUTPUT/checkpoint after an interruption.")
    ] = True,
) -> None:
    """Fine-tune a model on your labelled images; writes a model folder with metrics and a PR curve."""
    if not nsfw_class:
        raise typer.BadParameter(
            "name the NSFW class(es) of the dataset", param_hint="--nsfw-class"
        )
    try:
        config = FinetuneConfig(
            mode=mode,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            warmup_epochs=warmup_epochs,
            label_smoothing=label_smoothing,
            grad_accumulation=grad_accumulation,
            unfreeze_blocks=unfreeze_blocks,
            patience=patience,
            val_fraction=val_fraction,
            seed=seed,
            precision=precision,
            threshold=threshold,
        )
    except PixguardError as exc:
        raise fail(exc) from None
    with progress_bar(stderr.is_terminal, "fine-tuning") as bar:
        task = bar.add_task("finetune", total=epochs)

        def on_progress(event: dict[str, Any]) -> None:
            if event.get("stage") == "embedding":
                bar.update(task, description=f"embedding {event['done']}/{event['total']}")
            elif "val_accuracy" in event:
                bar.update(
                    task,
                    completed=event["epoch"],
                    description=f"epoch {event['epoch']} loss {event['loss']:.3f} val acc {event['val_accuracy']:.3f}",
                )
            elif "step" in event:
                bar.update(
                    task,
                    description=f"epoch {event['epoch']} step {event['step']}/{event['steps']} loss {event['loss']:.3f}",
                )

        try:
            result = finetune(
                data,
                base=base,
                output=output,
                nsfw_classes=nsfw_class,
                config=config,
                val=val,
                test=test,
                resume=resume,
                progress=on_progress,
            )
        except PixguardError as exc:
            raise fail(exc) from None
    print_table(_report_table({**result.metrics, "model": str(output)}))
    stderr.print(
        f"metrics on the {result.metrics['metrics_split']} split: {result.metrics['metrics_split_note']}"
    )
    typer.echo(
        f"wrote {output} (config.json, model.safetensors, metrics.json, train.log, pr_curve.png, roc_curve.png)"
    )


def evaluate_command(
    data: Annotated[Path, typer.Argument(help="ImageFolder, or a .csv/.jsonl manifest.")],
    model: ModelOption = DEFAULT_MODEL,
    nsfw_class: NsfwClassOption = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write metrics.json and PR/ROC curves (PNG) here."),
    ] = None,
    runtime: Annotated[str, typer.Option()] = "auto",
    threshold: Annotated[
        float | None, typer.Option(help="Evaluate at this threshold (default: the model's).")
    ] = None,
    output_format: Annotated[
        str, typer.Option("--format", "-f", help="table or json (json: the metrics.json keys).")
    ] = "table",
) -> None:
    """Accuracy, per-class precision/recall/F1, ROC-AUC, confusion matrix and a threshold table."""
    try:
        classifier = Classifier.load(model, runtime=runtime, threshold=threshold)
        metrics = evaluate(data, classifier, nsfw_classes=nsfw_class, output=output)
    except PixguardError as exc:
        raise fail(exc) from None
    if output_format == "json":
        typer.echo(json.dumps(metrics, indent=2))
        return
    print_table(_report_table(metrics))
    matrix = metrics["confusion_matrix"]["rows_true_columns_predicted"]
    typer.echo(f"confusion (rows true sfw/nsfw, columns predicted sfw/nsfw): {matrix}")
    table = Table(title="threshold table")
    for column in ("threshold", "precision", "recall", "FPR"):
        table.add_column(column)
    for row in metrics["threshold_table"]:
        table.add_row(
            f"{row['threshold']:.3f}",
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['fpr']:.3f}",
        )
    print_table(table)


def calibrate_command(
    data: Annotated[Path, typer.Argument(help="ImageFolder, or a .csv/.jsonl manifest.")],
    model: Annotated[
        Path,
        typer.Option(
            "--model", "-m", help="The model folder whose config.json gets the threshold."
        ),
    ],
    target_precision: Annotated[
        float | None, typer.Option(help="Lowest threshold with at least this precision.")
    ] = None,
    target_recall: Annotated[
        float | None, typer.Option(help="Highest threshold with at least this recall.")
    ] = None,
    nsfw_class: NsfwClassOption = None,
    runtime: Annotated[str, typer.Option()] = "auto",
    output_format: Annotated[str, typer.Option("--format", "-f", help="text or json.")] = "text",
) -> None:
    """Pick the threshold that meets a precision or recall target, and write it into the model."""
    try:
        point = calibrate(
            data,
            model,
            target_precision=target_precision,
            target_recall=target_recall,
            nsfw_classes=nsfw_class,
            runtime=runtime,
        )
    except PixguardError as exc:
        raise fail(exc) from None
    if output_format == "json":
        typer.echo(json.dumps(point, indent=2))
    else:
        typer.echo(
            f"threshold {point['threshold']:.4f}: precision {point['precision']:.3f}, recall {point['recall']:.3f}, "
            f"FPR {point['fpr']:.3f} on {point['samples']} images; written to {model / 'config.json'}"
        )


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune_command)
    app.command("evaluate")(evaluate_command)
    app.command("calibrate")(calibrate_command)
