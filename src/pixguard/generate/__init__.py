"""Safe generation: Stable Diffusion 3.5 behind pixguard's fail-closed safety gate."""

from ._gate import GateDecision, SafetyGate
from ._generator import GeneratedImage, Generator
from ._variants import VARIANTS, Variant

__all__ = ["VARIANTS", "GateDecision", "GeneratedImage", "Generator", "SafetyGate", "Variant"]
