"""Back to training: decided items as an ImageFolder that ``pixguard finetune`` reads."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from .._exceptions import ReviewInvalidError
from .._files import atomic_text_file
from ._queue import ReviewQueue
from ._records import DecisionKind

__all__ = ["EXPORT_LABELS", "MANIFEST_COLUMNS", "ExportReport", "export_training_set"]

#: The folder (class) each standing human decision goes to.
EXPORT_LABELS = {DecisionKind.allow: "sfw", DecisionKind.remove: "nsfw"}
MANIFEST_COLUMNS = (
    "path",
    "label",
    "sha256",
    "item_id",
    "decision_id",
    "reviewer",
    "time",
    "nsfw_score",
    "model",
    "model_label",
    "overturned",
    "note",
)


@dataclass(frozen=True)
class ExportReport:
    output: Path
    manifest: Path
    counts: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        return {"output": str(self.output), "manifest": str(self.manifest), "counts": self.counts}


def export_training_set(queue: ReviewQueue, output: str | os.PathLike[str]) -> ExportReport:
    """Write every decided item whose image is kept into ``output/nsfw`` (removed) and
    ``output/sfw`` (allowed), named by sha256, plus ``manifest.csv`` (the paths
    relative to it, the human's label, reviewer, time, the model's score and label,
    and whether the human overturned the model).

    ``output`` must be new or empty, so an export never mixes with older files.
    """
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ReviewInvalidError("the export folder must be new or empty", source=str(output))
    for label in EXPORT_LABELS.values():
        (output / label).mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(EXPORT_LABELS.values(), 0)
    manifest = output / "manifest.csv"
    with atomic_text_file(manifest) as stream:
        writer = csv.writer(stream)
        writer.writerow(MANIFEST_COLUMNS)
        for item, record in queue.iter_final():
            data = queue.read_bytes(item)
            if data is None:  # deleted by retention since the query
                continue
            label = EXPORT_LABELS[record.decision]
            relative = Path(label) / f"{item.sha256}{item.suffix}"
            (output / relative).write_bytes(data)
            counts[label] += 1
            writer.writerow(
                [
                    relative.as_posix(),
                    label,
                    item.sha256,
                    item.id,
                    record.id,
                    record.reviewer,
                    record.time,
                    item.nsfw_score,
                    item.model,
                    item.model_label,
                    record.overturned,
                    record.note or "",
                ]
            )
    return ExportReport(output=output, manifest=manifest, counts=counts)
