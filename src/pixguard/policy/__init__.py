"""Policies: a prediction (and a bank match) to an action, ``allow``, ``review`` or ``block``.

>>> from pixguard.policy import Policy
>>> policy = Policy.load("policy.toml")             # doctest: +SKIP
>>> policy.decide(prediction).action                # doctest: +SKIP
"""

from ._policy import MAX_POLICY_BYTES, Action, Bands, Decision, Policy
from ._video import block_score, decide_worst

__all__ = [
    "MAX_POLICY_BYTES",
    "Action",
    "Bands",
    "Decision",
    "Policy",
    "block_score",
    "decide_worst",
]
