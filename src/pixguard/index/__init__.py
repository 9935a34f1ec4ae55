"""Embedding index: similarity search, near-duplicates, clustering, known-bad banks,
over FAISS + SQLite (a folder) or Milvus (a Milvus Lite file, or a server)."""

from ._analysis import Cluster, cluster, contact_sheet
from ._banks import DEFAULT_BANK_THRESHOLD, BankMatch
from ._faiss_store import REFRESH_SECONDS
from ._index import Index
from ._migrate import migrate
from ._milvus_connection import MILVUS_PREFIX
from ._milvus_connection import TOKEN_ENV as MILVUS_TOKEN_ENV
from ._results import AddReport, Hit
from ._store import Entry, NewEntry
from ._stores import IndexStore
from ._vectors import INDEX_KINDS, VectorIndex, normalise

__all__ = [
    "DEFAULT_BANK_THRESHOLD",
    "INDEX_KINDS",
    "MILVUS_PREFIX",
    "MILVUS_TOKEN_ENV",
    "REFRESH_SECONDS",
    "AddReport",
    "BankMatch",
    "Cluster",
    "Entry",
    "Hit",
    "Index",
    "IndexStore",
    "NewEntry",
    "VectorIndex",
    "cluster",
    "contact_sheet",
    "migrate",
    "normalise",
]
