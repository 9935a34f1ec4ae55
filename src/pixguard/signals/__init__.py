"""Signals: evidence about images that policy rules test (see ``_base``)."""

from ._base import Signal, SignalCost, SignalResult, SignalValue, Subject

__all__ = ["Signal", "SignalCost", "SignalResult", "SignalValue", "Subject"]
