"""The lock (requirements/lock.txt) is what a fresh clone installs: it must cover every
dependency pyproject.toml declares, within its ranges, and stay installable beside a
CPU-only torch."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version
from scripts.check_lock import canonical, differences, locked_versions

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"
CUDA_RUNTIME = re.compile(r"^(nvidia-|cuda-|triton$)")


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [
        Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    ]


def test_every_declared_dependency_is_locked_within_its_range():
    locked = locked_versions(REQUIREMENTS / "lock.txt")
    for requirement in declared():
        name = canonical(requirement.name)
        assert name in locked, f"{requirement} is not in the lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"the lock has {name}=={locked[name]}, outside pyproject's {requirement}"
        )


def test_the_pins_the_lock_starts_from_are_kept():
    locked = locked_versions(REQUIREMENTS / "lock.txt")
    pins = locked_versions(REQUIREMENTS / "pins.txt")
    assert pins.keys() >= {"torch", "torchvision"}
    for name, version in pins.items():
        assert locked[name] == version


@pytest.mark.parametrize("package", ["torch", "torchvision"])
def test_torch_pins_admit_the_cpu_only_build(package):
    version = locked_versions(REQUIREMENTS / "lock.txt")[package]
    assert Version(version).local is None, "a local label would exclude the other builds"
    pin = Requirement(f"{package}=={version}")
    assert pin.specifier.contains(f"{version}+cpu")
    assert pin.specifier.contains(f"{version}+cu130")


def test_the_cuda_runtime_is_kept_apart_from_the_main_lock():
    main = locked_versions(REQUIREMENTS / "lock.txt")
    cuda = locked_versions(REQUIREMENTS / "lock-cuda.txt")
    assert cuda, "lock-cuda.txt pins the CUDA runtime of the locked torch"
    assert not [name for name in main if CUDA_RUNTIME.match(name)]
    assert all(CUDA_RUNTIME.match(name) for name in cuda)


def test_check_lock_reports_each_kind_of_difference():
    locked = {"torch": "2.14.1", "numpy": "2.4.6", "rich": "14.0.0"}
    installed = {"torch": "2.14.1+cpu", "numpy": "2.5.0"}
    assert differences(locked, installed) == [
        "numpy: locked 2.4.6, installed 2.5.0",
        "rich: locked 14.0.0, not installed",
    ]
