"""Policy decisions for videos: the action follows the worst segment."""

from __future__ import annotations

from dataclasses import replace

from ..classify import Prediction, VideoPrediction
from ._policy import Decision, Policy

__all__ = ["block_score", "decide_worst"]


def decide_worst(policy: Policy, prediction: Prediction, *, bank_match: bool = False) -> Decision:
    """:meth:`Policy.decide`; for a video, the most severe decision over its
    timeline's segments (each judged on its own frame's scores)."""
    if not isinstance(prediction, VideoPrediction) or not prediction.ok:
        return policy.decide(prediction, bank_match=bank_match)
    worst: tuple[Decision, str] | None = None
    for segment in prediction.timeline:
        frame = replace(
            prediction,
            nsfw_score=segment.nsfw_score,
            probabilities=dict(segment.probabilities),
        )
        decision = policy.decide(frame, bank_match=bank_match)
        if worst is None or decision.action.severity > worst[0].action.severity:
            worst = (decision, f"{segment.start:.1f}-{segment.end:.1f} s")
    if worst is None:
        return policy.decide(prediction, bank_match=bank_match)
    decision, where = worst
    return replace(decision, reason=f"{decision.reason}; worst segment {where}")


def block_score(policy: Policy, model: str) -> float | None:
    """The ``nsfw_score`` at which the rule for ``model`` blocks (None: it never does)."""
    rule = policy.models.get(policy.rule_for(model), policy.default)
    return rule.bands.block_from
