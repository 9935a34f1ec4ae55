"""Policies: a model's scores (and a bank match) to an action, from a versioned TOML file.

A policy is loaded and validated once; deciding is then a pure function of the
prediction, so the same file gives the same action everywhere (CLI, service, scans).
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePath
from typing import Any

from .._exceptions import (
    InvalidThresholdError,
    PolicyInvalidError,
    PolicyLabelError,
    PolicyNotFoundError,
)
from .._files import MIB
from ..classify import Prediction

__all__ = ["MAX_POLICY_BYTES", "Action", "Bands", "Decision", "Policy"]

# A policy file is a few hundred bytes; anything far larger is not a policy.
MAX_POLICY_BYTES = MIB


class Action(StrEnum):
    """What to do with an image, in increasing severity."""

    allow = "allow"
    review = "review"
    block = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.allow: 0, Action.review: 1, Action.block: 2}
_BANK_ACTIONS = (Action.review, Action.block)
_BAND_KEYS = ("review_from", "block_from")
_TABLE_KEYS = {*_BAND_KEYS, "bank_match"}
_MODEL_KEYS = {*_TABLE_KEYS, "labels"}
_TOP_KEYS = {"default", "models", "allow_everything"}

_Invalid = Callable[[str], PolicyInvalidError]


@dataclass(frozen=True)
class Decision:
    """The action a policy gives one prediction, why, and which policy version said so."""

    action: Action
    reason: str
    policy_version: str

    def to_dict(self) -> dict[str, str]:
        return {
            "action": self.action.value,
            "reason": self.reason,
            "policy_version": self.policy_version,
        }


@dataclass(frozen=True)
class Bands:
    """Score bands: ``score >= block_from`` blocks, else ``score >= review_from`` reviews.

    A band that is ``None`` never fires.
    """

    review_from: float | None = None
    block_from: float | None = None

    def action(self, score: float) -> Action:
        if self.block_from is not None and score >= self.block_from:
            return Action.block
        if self.review_from is not None and score >= self.review_from:
            return Action.review
        return Action.allow

    @property
    def acts(self) -> bool:
        return self.review_from is not None or self.block_from is not None


@dataclass(frozen=True)
class _Rule:
    """The effective rule for one model: its bands, bank action and per-label bands."""

    name: str
    bands: Bands
    bank_match: Action
    labels: Mapping[str, Bands] = field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    """A validated policy. Build it with :meth:`load` or :meth:`from_bytes`.

    >>> policy = Policy.load("policy.toml")                  # doctest: +SKIP
    >>> policy.decide(prediction, bank_match=False).action   # doctest: +SKIP
    <Action.review: 'review'>
    """

    version: str
    source: str
    default: _Rule
    models: Mapping[str, _Rule]
    allow_everything: bool = False

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read and validate the TOML policy at ``path``."""
        path = Path(path)
        try:
            if path.stat().st_size > MAX_POLICY_BYTES:
                raise PolicyInvalidError(
                    f"larger than {MAX_POLICY_BYTES} bytes; not a policy file", source=str(path)
                )
            data = path.read_bytes()
        except FileNotFoundError:
            raise PolicyNotFoundError("no such policy file", source=str(path)) from None
        except OSError as exc:
            raise PolicyNotFoundError(
                f"cannot read the policy file: {exc.strerror or exc}", source=str(path)
            ) from None
        return cls.from_bytes(data, source=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "<policy>") -> Policy:
        """Validate a policy from the bytes of a TOML file; its version is their sha256."""
        if len(data) > MAX_POLICY_BYTES:
            raise PolicyInvalidError(
                f"larger than {MAX_POLICY_BYTES} bytes; not a policy file", source=source
            )
        try:
            document = tomllib.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise PolicyInvalidError("not UTF-8 text", source=source) from None
        except tomllib.TOMLDecodeError as exc:
            raise PolicyInvalidError(f"not valid TOML: {exc}", source=source) from None
        return _parse(document, version=hashlib.sha256(data).hexdigest(), source=source)

    def rule_for(self, model: str) -> str:
        """The table that applies to ``model``: its own ``[models."..."]``, else ``default``."""
        return self._rule(model).name

    def _rule(self, model: str) -> _Rule:
        if model in self.models:
            return self.models[model]
        # A model folder may be named by its last component, so a policy written for
        # "my-policy" applies to /models/my-policy on any machine.
        folder = PurePath(model).name
        if folder and folder in self.models:
            return self.models[folder]
        return self.default

    def check_labels(self, model: str, label_names: Iterable[str]) -> None:
        """Raise ``PolicyLabelError`` if the rule for ``model`` names labels it lacks."""
        rule = self._rule(model)
        missing = sorted(set(rule.labels) - set(label_names))
        if missing:
            raise PolicyLabelError(
                f"the rule {rule.name!r} has label rules for {missing}, "
                f"but model {model!r} has the labels {sorted(label_names)}",
                source=self.source,
            )

    def decide(self, prediction: Prediction, *, bank_match: bool = False) -> Decision:
        """The action for one prediction (and whether it matched a known-bad bank).

        The most severe of the score bands, the per-label bands and the bank rule
        wins. A prediction without a score (its input could not be read) is blocked:
        what could not be checked is not allowed through.
        """
        rule = self._rule(prediction.model)
        if prediction.error is not None or prediction.nsfw_score is None:
            code = prediction.error.code if prediction.error is not None else "no_score"
            return self._decision(Action.block, f"not classified ({code})")
        candidates: list[tuple[Action, str]] = [
            _band_decision(rule.bands, prediction.nsfw_score, "nsfw_score", rule.name)
        ]
        for label, bands in rule.labels.items():
            if label not in prediction.probabilities:
                raise PolicyLabelError(
                    f"the rule {rule.name!r} has a label rule for {label!r}, which model "
                    f"{prediction.model!r} does not have",
                    source=self.source,
                )
            candidates.append(
                _band_decision(bands, prediction.probabilities[label], f"p({label})", rule.name)
            )
        if bank_match:
            candidates.append((rule.bank_match, f"known-bad bank match ({rule.name})"))
        action, reason = max(candidates, key=lambda pair: pair[0].severity)
        return self._decision(action, reason)

    def _decision(self, action: Action, reason: str) -> Decision:
        return Decision(action=action, reason=reason, policy_version=self.version)


def _band_decision(bands: Bands, score: float, what: str, rule: str) -> tuple[Action, str]:
    action = bands.action(score)
    if action is Action.block:
        return action, f"{what} {score:.4f} >= block_from {bands.block_from} ({rule})"
    if action is Action.review:
        return action, f"{what} {score:.4f} >= review_from {bands.review_from} ({rule})"
    below = bands.review_from if bands.review_from is not None else bands.block_from
    if below is None:
        return action, f"{what} has no bands ({rule})"
    return action, f"{what} {score:.4f} < {below} ({rule})"


def _parse(document: dict[str, Any], *, version: str, source: str) -> Policy:
    def invalid(message: str) -> PolicyInvalidError:
        return PolicyInvalidError(message, source=source)

    _check_keys(document, _TOP_KEYS, "the top level", invalid)
    allow_everything = document.get("allow_everything", False)
    if not isinstance(allow_everything, bool):
        raise invalid("allow_everything must be true or false")
    default_table = document.get("default")
    if not isinstance(default_table, dict):
        raise invalid("a [default] table is required (it applies to every model without its own)")
    _check_keys(default_table, _TABLE_KEYS, "[default]", invalid)
    default = _rule("default", default_table, Bands(), Action.block, source=source, invalid=invalid)

    model_tables = document.get("models", {})
    if not isinstance(model_tables, dict):
        raise invalid('[models] must hold tables: [models."name"]')
    models: dict[str, _Rule] = {}
    for name, table in model_tables.items():
        where = f'[models."{name}"]'
        if not isinstance(table, dict):
            raise invalid(f"{where} must be a table")
        _check_keys(table, _MODEL_KEYS, where, invalid)
        models[name] = _rule(
            name, table, default.bands, default.bank_match, source=source, invalid=invalid
        )

    if not allow_everything:
        for rule in (default, *models.values()):
            if not rule.bands.acts and not any(b.acts for b in rule.labels.values()):
                raise invalid(
                    f"the rule {rule.name!r} has neither review_from nor block_from, so it "
                    "allows every image; set allow_everything = true if that is intended"
                )
    return Policy(
        version=version,
        source=source,
        default=default,
        models=models,
        allow_everything=allow_everything,
    )


def _rule(
    name: str,
    table: dict[str, Any],
    inherited: Bands,
    inherited_bank: Action,
    *,
    source: str,
    invalid: _Invalid,
) -> _Rule:
    where = "[default]" if name == "default" else f'[models."{name}"]'
    bands = _bands(table, inherited, where, source=source, invalid=invalid)
    bank = table.get("bank_match", inherited_bank.value)
    if bank not in {a.value for a in _BANK_ACTIONS}:
        raise invalid(f'{where} bank_match must be "block" or "review", not {bank!r}')
    labels: dict[str, Bands] = {}
    label_tables = table.get("labels", {})
    if not isinstance(label_tables, dict):
        raise invalid(f"{where}.labels must hold one table per label")
    for label, label_table in label_tables.items():
        label_where = f"{where}.labels.{label}"
        if not isinstance(label_table, dict):
            raise invalid(f"{label_where} must be a table")
        _check_keys(label_table, set(_BAND_KEYS), label_where, invalid)
        label_bands = _bands(label_table, Bands(), label_where, source=source, invalid=invalid)
        if not label_bands.acts:
            raise invalid(f"{label_where} needs review_from or block_from")
        labels[label] = label_bands
    return _Rule(name=name, bands=bands, bank_match=Action(bank), labels=labels)


def _bands(
    table: dict[str, Any], inherited: Bands, where: str, *, source: str, invalid: _Invalid
) -> Bands:
    values: dict[str, float | None] = {
        "review_from": inherited.review_from,
        "block_from": inherited.block_from,
    }
    for key in _BAND_KEYS:
        if key not in table:
            continue
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid(f"{where} {key} must be a number in [0, 1], not {value!r}")
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise InvalidThresholdError(f"{where} {key} = {value} is outside [0, 1]", source=source)
        values[key] = float(value)
    bands = Bands(**values)
    if (
        bands.review_from is not None
        and bands.block_from is not None
        and bands.block_from < bands.review_from
    ):
        raise invalid(
            f"{where} block_from ({bands.block_from}) is below review_from "
            f"({bands.review_from}), counting values inherited from [default]; "
            "block_from must be >= review_from"
        )
    return bands


def _check_keys(table: dict[str, Any], allowed: set[str], where: str, invalid: _Invalid) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise invalid(f"{where} has unknown keys {unknown}; allowed: {sorted(allowed)}")
