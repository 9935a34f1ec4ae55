"""Compare this environment with requirements/lock.txt.

    python scripts/check_lock.py            exit 1 when an installed version differs
    python scripts/check_lock.py --report   list every difference, exit 0 (setup.sh --latest)

A local build label is ignored, as pip's `==` ignores it: `2.14.1+cpu` matches `2.14.1`.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

LOCK = Path(__file__).resolve().parent.parent / "requirements" / "lock.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock: Path = LOCK) -> dict[str, str]:
    pins = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            pins[canonical(match[1])] = match[2]
    return pins


def installed_versions() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}


def differences(locked: dict[str, str], installed: dict[str, str]) -> list[str]:
    lines = []
    for name, version in sorted(locked.items()):
        have = installed.get(name)
        if have is None:
            lines.append(f"{name}: locked {version}, not installed")
        elif have.split("+")[0] != version:
            lines.append(f"{name}: locked {version}, installed {have}")
    return lines


def main(argv: list[str]) -> int:
    report = "--report" in argv
    found = differences(locked_versions(), installed_versions())
    if report:
        print(f"== {len(found)} packages differ from {LOCK.name}")
        print("\n".join(found))
        return 0
    if found:
        print(f"check_lock: this environment differs from {LOCK}:", file=sys.stderr)
        print("\n".join(f"  {line}" for line in found), file=sys.stderr)
        return 1
    print(f"check_lock: every package matches {LOCK.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
