"""Parity verdicts: measured once per model, path and machine, then cached.

An int8 export carries the fp32 source's scores on the parity inputs (its source
model is not at hand where it loads), and is checked against them on each new
machine: the verdict recorded at export speaks only for the machine that exported.
"""

from __future__ import annotations

from importlib import metadata

from .._exceptions import RuntimeUnavailableError
from .._files import write_json_atomic
from ._artifacts import ModelArtifacts
from ._base import Runtime
from ._cache import cache_root, read_json
from ._dispatch import is_reference, open_on, open_reference
from ._parity import ParityReference, ParityReport, check_parity, compare_with_reference

__all__ = ["gated"]

#: Bumped when the parity inputs change, so older verdicts are measured again.
_VERDICT_FORMAT = 3


def _library_versions() -> str:
    versions = [f"verdicts={_VERDICT_FORMAT}"]
    for package in ("torch", "onnxruntime", "openvino", "pixguard"):
        try:
            versions.append(f"{package}={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return ",".join(versions)


def _measure(
    artifacts: ModelArtifacts, candidate: Runtime, kind: str, threshold: float
) -> ParityReport:
    if not artifacts.quantized():
        return check_parity(open_reference(artifacts), candidate, threshold=threshold)
    recorded = artifacts.export_record().get("parity_reference")
    if not recorded:
        raise RuntimeUnavailableError(
            "this int8 export records no reference scores to check it against on this "
            "machine; export it again with this version of pixguard",
            source=artifacts.spec.name,
        )
    return compare_with_reference(
        ParityReference.from_dict(recorded), candidate, threshold=threshold
    )


def gated(
    artifacts: ModelArtifacts, kind: str, precision: str, threshold: float
) -> tuple[Runtime | None, ParityReport | None]:
    """Open ``kind``/``precision`` and its parity verdict (measured here, or cached).

    The runtime is ``None`` when a cached verdict says the path fails the gate (it
    is not opened); fp32 eager itself has no verdict.
    """
    if is_reference(artifacts, kind, precision):
        return open_on(artifacts, kind, precision), None
    verdict_path = (
        cache_root() / "parity" / f"{artifacts.digest()[:24]}-{kind}-{precision}-{threshold}.json"
    )
    cached = read_json(verdict_path)
    if cached and cached.get("versions") == _library_versions():
        report = ParityReport(**cached["report"])
        return (open_on(artifacts, kind, precision) if report.passed else None), report
    candidate = open_on(artifacts, kind, precision)
    report = _measure(artifacts, candidate, kind, threshold)
    write_json_atomic(verdict_path, {"versions": _library_versions(), "report": report.to_dict()})
    return candidate, report
