"""The signal contract: what every signal (pixguard's own, or a plugin's) implements.

A signal looks at a batch of inputs after the classifier has run on them and gives
one :class:`SignalResult` per input: named values that policy rules test
(``classifier.nsfw_score >= 0.9``, ``embedding_bank.matched``), whether it fired, and
the error when it could not say. Signals never decide; the policy does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from .._exceptions import PixguardError
from ..classify import Prediction

__all__ = ["Signal", "SignalCost", "SignalResult", "SignalValue", "Subject"]

#: A value a rule can test: numbers, flags and short strings only.
SignalValue = bool | int | float | str | None


class SignalCost(StrEnum):
    """How much one input costs a signal, so cheap signals can run first."""

    lookup = "lookup"  # a hash or table lookup: microseconds
    local = "local"  # local CPU work beside the model: milliseconds
    model = "model"  # a forward pass of a model
    remote = "remote"  # a network call to another service


@dataclass(frozen=True)
class Subject:
    """One input as the signals see it.

    ``data`` holds the input's bytes where the surface has them (paths and uploads),
    ``sha256`` their digest; both are ``None`` for in-memory images. ``prediction``
    is the classifier's result for the input, which every signal may read.
    """

    source: str
    prediction: Prediction
    sha256: str | None = None
    data: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SignalResult:
    """One signal's answer for one input.

    ``values`` are the fields rules can name as ``<signal>.<field>``. ``fired`` says
    whether the signal found what it looks for (a bank match, a flagged score).
    ``error`` is set when the signal raised or timed out; then ``values`` is empty
    and the policy's rules decide whether that fails open or closed.
    """

    signal: str
    version: str
    values: Mapping[str, SignalValue] = field(default_factory=dict)
    fired: bool = False
    error: PixguardError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "version": self.version,
            "values": dict(self.values),
            "fired": self.fired,
            "error": None if self.error is None else self.error.to_dict(),
        }


@runtime_checkable
class Signal(Protocol):
    """A source of evidence about images.

    ``name`` is how rules refer to it (``[a-z][a-z0-9_]*``), ``version`` changes
    whenever its answers may change (its data or code), ``cost`` orders signals.
    ``compute`` takes a batch (banks search in batches) and returns one result per
    subject, in order; it may raise, and the moderator records that as the signal's
    error for every subject of the batch.
    """

    name: str
    version: str
    cost: SignalCost

    def compute(self, subjects: Sequence[Subject]) -> Sequence[SignalResult]: ...
