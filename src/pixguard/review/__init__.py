"""The review queue: what a policy routes to ``review`` goes to people, whose
decisions become the next training set.

>>> from pixguard.review import ReviewQueue, export_training_set
>>> with ReviewQueue.open("pixguard-data") as queue:        # doctest: +SKIP
...     [item] = queue.claim("alice", limit=1)
...     queue.decide(item.id, "alice", "remove")
...     export_training_set(queue, "reviewed/")
"""

from ._export import EXPORT_LABELS, MANIFEST_COLUMNS, ExportReport, export_training_set
from ._intake import Routed, route_images
from ._queue import DEFAULT_LEASE_S, DEFAULT_RETENTION_S, MAX_BULK, MAX_CLAIM, ReviewQueue
from ._records import REVIEWER_DECISIONS, DecisionKind, DecisionRecord, ItemState, ReviewItem

__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_RETENTION_S",
    "EXPORT_LABELS",
    "MANIFEST_COLUMNS",
    "MAX_BULK",
    "MAX_CLAIM",
    "REVIEWER_DECISIONS",
    "DecisionKind",
    "DecisionRecord",
    "ExportReport",
    "ItemState",
    "ReviewItem",
    "ReviewQueue",
    "Routed",
    "export_training_set",
    "route_images",
]
