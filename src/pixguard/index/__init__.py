"""Embedding index: similarity search, near-duplicates, clustering, known-bad banks."""

from ._index import DEFAULT_BANK_THRESHOLD, AddReport, BankMatch, Cluster, Hit, Index
from ._store import Entry
from ._vectors import INDEX_KINDS, VectorIndex, normalise

__all__ = [
    "DEFAULT_BANK_THRESHOLD",
    "INDEX_KINDS",
    "AddReport",
    "BankMatch",
    "Cluster",
    "Entry",
    "Hit",
    "Index",
    "VectorIndex",
    "normalise",
]
