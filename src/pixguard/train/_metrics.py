"""Binary NSFW-vs-safe metrics, threshold tables, curves and their plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from sklearn import metrics

__all__ = ["operating_point", "pr_curve", "report", "roc_auc", "roc_curve", "save_curves"]

TABLE_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 1.0, 0.05))


def _confusion(
    truth: np.ndarray, scores: np.ndarray, threshold: float
) -> tuple[int, int, int, int]:
    """(tn, fp, fn, tp) of the NSFW decision ``score >= threshold``."""
    matrix = metrics.confusion_matrix(truth, scores >= threshold, labels=[False, True])
    tn, fp, fn, tp = (int(v) for v in matrix.ravel())
    return tn, fp, fn, tp


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def operating_point(truth: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    tn, fp, fn, tp = _confusion(truth, scores, threshold)
    return {
        "threshold": float(threshold),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "fpr": _ratio(fp, fp + tn),
    }


def roc_auc(truth: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve; ``None`` when only one class is present."""
    if truth.all() or not truth.any():
        return None
    return float(metrics.roc_auc_score(truth, scores))


def pr_curve(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) at every distinct score, highest threshold first.

    scikit-learn's curve, without its closing (precision 1, recall 0) point."""
    precision, recall, thresholds = metrics.precision_recall_curve(
        truth, scores, drop_intermediate=False
    )
    return precision[:-1][::-1], recall[:-1][::-1], thresholds[::-1]


def roc_curve(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate), from (0, 0)."""
    fpr, tpr, _ = metrics.roc_curve(truth, scores, drop_intermediate=False)
    return fpr, tpr


def report(truth: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, ROC-AUC, confusion matrix and a
    threshold table for the NSFW-vs-safe decision at ``threshold``."""
    truth = np.asarray(truth, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if not len(truth):
        raise ValueError("no scored samples to report on")
    predicted = scores >= threshold
    tn, fp, fn, tp = _confusion(truth, scores, threshold)
    # Class order: sfw (False), nsfw (True).
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        truth, predicted, labels=[False, True], zero_division=0
    )

    def per_class(index: int) -> dict[str, float]:
        return {
            "precision": float(precision[index]),
            "recall": float(recall[index]),
            "f1": float(f1[index]),
            "support": int(support[index]),
        }

    return {
        "samples": len(truth),
        "threshold": float(threshold),
        "accuracy": float(metrics.accuracy_score(truth, predicted)),
        "classes": {"nsfw": per_class(1), "sfw": per_class(0)},
        "roc_auc": roc_auc(truth, scores),
        "confusion_matrix": {
            "labels": ["sfw", "nsfw"],
            "rows_true_columns_predicted": [[tn, fp], [fn, tp]],
        },
        "threshold_table": [
            operating_point(truth, scores, t) for t in sorted({*TABLE_THRESHOLDS, float(threshold)})
        ],
    }


def save_curves(
    truth: np.ndarray, scores: np.ndarray, folder: Path, *, threshold: float, title: str
) -> list[Path]:
    """PR and ROC curves as PNG, with the operating point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = np.asarray(truth, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    folder.mkdir(parents=True, exist_ok=True)
    point = operating_point(truth, scores, threshold)
    marker = {"color": "red", "zorder": 3, "label": f"threshold {threshold:.3f}"}

    def figure(name: str, legend: Literal["lower left", "lower right"], draw: Any) -> Path:
        fig, axes = plt.subplots(figsize=(5, 4), dpi=120)
        draw(axes)
        axes.legend(loc=legend)
        axes.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(folder / name)
        plt.close(fig)
        return folder / name

    precision, recall, _ = pr_curve(truth, scores)
    fpr, tpr = roc_curve(truth, scores)
    auc = roc_auc(truth, scores)

    def draw_pr(axes: Any) -> None:
        axes.plot(np.r_[0.0, recall], np.r_[1.0, precision], drawstyle="steps-post")
        axes.scatter([point["recall"]], [point["precision"]], **marker)
        axes.set(
            xlabel="recall (NSFW caught)",
            ylabel="precision (flags that are NSFW)",
            xlim=(0, 1.01),
            ylim=(0, 1.01),
            title=f"{title}: precision-recall",
        )

    def draw_roc(axes: Any) -> None:
        axes.plot(fpr, tpr, label=f"AUC {auc:.3f}" if auc is not None else None)
        axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
        axes.scatter([point["fpr"]], [point["recall"]], **marker)
        axes.set(
            xlabel="false positive rate",
            ylabel="true positive rate",
            xlim=(0, 1),
            ylim=(0, 1.01),
            title=f"{title}: ROC",
        )

    return [
        figure("pr_curve.png", "lower left", draw_pr),
        figure("roc_curve.png", "lower right", draw_roc),
    ]
