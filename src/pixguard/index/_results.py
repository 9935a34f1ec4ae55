"""What adding to an index and searching it return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .._exceptions import PixguardError
from ._store import Entry

__all__ = ["AddReport", "Hit"]


@dataclass(frozen=True)
class Hit:
    entry: Entry
    similarity: float

    def to_dict(self) -> dict[str, Any]:
        return {"similarity": self.similarity, **self.entry.to_dict()}


@dataclass
class AddReport:
    added: list[int] = field(default_factory=list)
    duplicates: int = 0
    failed: list[tuple[str, PixguardError]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": len(self.added),
            "duplicates": self.duplicates,
            "failed": [{"source": s, **e.to_dict()} for s, e in self.failed],
        }
