"""Binary NSFW-vs-safe metrics, threshold tables, curves and their plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["operating_point", "pr_curve", "report", "roc_auc", "roc_curve", "save_curves"]

TABLE_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 1.0, 0.05))


def _counts(truth: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    predicted = scores >= threshold
    tp = int(np.sum(predicted & truth))
    fp = int(np.sum(predicted & ~truth))
    fn = int(np.sum(~predicted & truth))
    tn = int(np.sum(~predicted & ~truth))
    return tp, fp, fn, tn


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def operating_point(truth: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    tp, fp, fn, tn = _counts(truth, scores, threshold)
    return {
        "threshold": float(threshold),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "fpr": _ratio(fp, fp + tn),
    }


def roc_auc(truth: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve as the Mann-Whitney statistic (ties count half)."""
    positives, negatives = scores[truth], scores[~truth]
    if not len(positives) or not len(negatives):
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    for end in range(1, len(scores) + 1):
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    rank_sum = ranks[truth].sum()
    return float(
        (rank_sum - len(positives) * (len(positives) + 1) / 2) / (len(positives) * len(negatives))
    )


def pr_curve(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) at every distinct score, highest first."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_truth = scores[order], truth[order]
    distinct = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]
    tps = np.cumsum(sorted_truth)[distinct]
    fps = (distinct + 1) - tps
    precision = tps / np.maximum(tps + fps, 1)
    recall = tps / max(int(truth.sum()), 1)
    return precision, recall, sorted_scores[distinct]


def roc_curve(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_truth = scores[order], truth[order]
    distinct = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]
    tps = np.cumsum(sorted_truth)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(int(truth.sum()), 1)]
    fpr = np.r_[0.0, fps / max(int((~truth).sum()), 1)]
    return fpr, tpr


def report(truth: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, ROC-AUC, confusion matrix and a
    threshold table for the NSFW-vs-safe decision at ``threshold``."""
    truth = np.asarray(truth, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if not len(truth):
        raise ValueError("no scored samples to report on")
    tp, fp, fn, tn = _counts(truth, scores, threshold)

    def per_class(hit: int, false_alarm: int, miss: int, support: int) -> dict[str, float]:
        precision, recall = _ratio(hit, hit + false_alarm), _ratio(hit, hit + miss)
        f1 = _ratio(2 * precision * recall, precision + recall)
        return {"precision": precision, "recall": recall, "f1": f1, "support": support}

    return {
        "samples": len(truth),
        "threshold": float(threshold),
        "accuracy": _ratio(tp + tn, len(truth)),
        "classes": {
            "nsfw": per_class(tp, fp, fn, int(truth.sum())),
            "sfw": per_class(tn, fn, fp, int((~truth).sum())),
        },
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

    def figure(name: str, legend: str, draw: Any) -> Path:
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
