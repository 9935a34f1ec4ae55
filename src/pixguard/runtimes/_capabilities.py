"""What this CPU runs natively: the one place pixguard asks (OpenVINO's view of the
CPU, which knows the instruction sets its kernels and torch's use)."""

from __future__ import annotations

from functools import cache
from typing import Any

from .._exceptions import RuntimeUnavailableError

__all__ = ["bf16_supported", "cpu_precisions", "openvino_core"]


def openvino_core() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise RuntimeUnavailableError("the openvino package is not installed") from exc
    return openvino.Core()


@cache
def cpu_precisions() -> tuple[str, ...]:
    """Precisions this CPU runs natively: ``fp32``, plus ``bf16`` and ``int8``
    where it has the instructions for them."""
    try:
        capabilities = set(openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except RuntimeUnavailableError:
        return ("fp32",)
    found = ["fp32"]
    if "BF16" in capabilities:
        found.append("bf16")
    if "INT8" in capabilities:
        found.append("int8")
    return tuple(found)


def bf16_supported() -> bool:
    """Whether bf16 runs natively here (AVX-512 BF16 or AMX), for autocast and OpenVINO."""
    return "bf16" in cpu_precisions()
