"""``load_runtime``: an explicit runtime, or ``auto``, the fastest path here that
passes the parity gate."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .._exceptions import (
    ModelLoadError,
    PixguardError,
    RuntimeUnavailableError,
    UnsafeWeightsError,
)
from ..models import ModelSpec
from ._artifacts import ModelArtifacts
from ._base import Runtime
from ._dispatch import custom_loader, open_on
from ._parity import ParityReport
from ._verdicts import gated

__all__ = ["AUTO_ORDER", "LoadedRuntime", "load_runtime"]

logger = logging.getLogger(__name__)

# Preference of `auto`, fastest first, from bench/classify.py on 2-core AVX-512 CPUs;
# each candidate is used only if it runs here and passes the parity gate.
AUTO_ORDER: tuple[tuple[str, str], ...] = (
    ("openvino", "int8"),
    ("onnxruntime", "int8"),
    ("openvino", "bf16"),
    ("onnxruntime", "fp32"),
    ("openvino", "fp32"),
    ("torch", "bf16"),
    ("torch", "fp32"),
)


@dataclass(frozen=True)
class LoadedRuntime:
    """The runtime chosen for a model, and how it compared with fp32 eager."""

    runtime: Runtime
    parity: ParityReport | None


def load_runtime(
    spec: ModelSpec,
    *,
    runtime: str = "auto",
    precision: str | None = None,
    threshold: float | None = None,
    trust_torchscript: bool = False,
) -> LoadedRuntime:
    """Open ``spec`` on ``runtime`` at ``precision``.

    ``auto`` tries the faster paths first (:data:`AUTO_ORDER`) and takes the first
    that runs on this machine and passes the parity gate against fp32 eager; an
    explicit runtime is used as asked, with its parity reported (and a warning when
    it fails the gate). ``trust_torchscript`` allows TorchScript archives that
    pixguard did not export on this machine (TorchScript is code).
    """
    try:
        loader = custom_loader(spec)
        if loader is not None:
            return LoadedRuntime(loader(spec), None)
        artifacts = ModelArtifacts(spec, trust_torchscript=trust_torchscript)
        threshold = artifacts.spec.threshold if threshold is None else threshold
        if runtime == "auto":
            return _auto(artifacts, precision, threshold)
        return _explicit(artifacts, runtime, precision or "fp32", threshold)
    except PixguardError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"loading failed ({type(exc).__name__}: {exc})", source=spec.name
        ) from exc


def _explicit(
    artifacts: ModelArtifacts, runtime: str, precision: str, threshold: float
) -> LoadedRuntime:
    chosen, report = gated(artifacts, runtime, precision, threshold)
    if report is not None and not report.passed:
        logger.warning(
            "%s on %s/%s fails the parity gate (max |delta score| %.4f, %d label flips)",
            artifacts.spec.name,
            runtime,
            precision,
            report.max_abs_diff,
            report.label_mismatches,
        )
    if chosen is None:
        chosen = open_on(artifacts, runtime, precision)
    return LoadedRuntime(chosen, report)


def _auto(artifacts: ModelArtifacts, precision: str | None, threshold: float) -> LoadedRuntime:
    name = artifacts.spec.name
    failures: list[str] = []
    for kind, candidate_precision in AUTO_ORDER:
        if precision is not None and candidate_precision != precision:
            continue
        try:
            chosen, report = gated(artifacts, kind, candidate_precision, threshold)
        except UnsafeWeightsError:
            raise  # a refusal to load, not a path that cannot run here
        except Exception as exc:
            # onnxruntime and OpenVINO raise their own native exceptions (and a
            # broken graph can raise KeyError) while a path is opened or checked:
            # the path is unusable here, and auto moves on to the next one.
            reason = (
                exc.message if isinstance(exc, PixguardError) else f"{type(exc).__name__}: {exc}"
            )
            logger.info(
                "auto runtime for %s: %s/%s skipped (%s)", name, kind, candidate_precision, reason
            )
            failures.append(f"{kind}/{candidate_precision}: {reason}")
            continue
        if chosen is not None and (report is None or report.passed):
            logger.info("auto runtime for %s: %s/%s", name, kind, candidate_precision)
            return LoadedRuntime(chosen, report)
        failures.append(f"{kind}/{candidate_precision}: fails the parity gate")
    raise RuntimeUnavailableError(
        "no runtime can run this model here: " + "; ".join(failures), source=name
    )
