#!/usr/bin/env bash
# One install for developers and CI: the system packages the tests drive (Debian's
# Chromium for the console's browser tests), then pixguard with its dev extras, at
# exactly the versions CI tested (requirements/lock.txt). Safe to run again: it
# installs only what is missing or differs from the lock.
#
#   bash scripts/setup.sh            install from the lock (what CI runs)
#   bash scripts/setup.sh --latest   install the newest releases that pyproject.toml
#                                    allows instead, and list how they differ from the lock
#
# PYTHON names the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python}
mode=lock
case "${1:-}" in
    "") ;;
    --latest) mode=latest ;;
    *) echo "setup: unknown option ${1} (use --latest, or nothing)" >&2; exit 2 ;;
esac

# The lock is resolved for one Python and platform; say so before pip tries another.
tested_python=3.11
found=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || {
    echo "setup: no Python at '$python' (set PYTHON=/path/to/python$tested_python)" >&2
    exit 1
}
if [[ $found != "$tested_python" ]]; then
    echo "setup: pixguard is tested on Python $tested_python, and this is Python $found ($python)." >&2
    echo "       Run it with PYTHON=python$tested_python bash scripts/setup.sh" >&2
    exit 1
fi
if [[ $(uname -s)/$(uname -m) != Linux/x86_64 ]]; then
    echo "setup: the lock is resolved for Linux x86-64, and this is $(uname -s) $(uname -m)." >&2
    echo "       Install without it: $python -m pip install -e '.[dev]'" >&2
    exit 1
fi

apt_packages=(chromium)
missing=()
for package in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
        echo "setup: need root (or sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
    as_root=()
    [[ $(id -u) -ne 0 ]] && as_root=(sudo)
    echo "== apt-get install ${missing[*]}"
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [[ $mode == latest ]]; then
    echo "== pip install --upgrade -e '.[dev]' (newest releases, not the lock)"
    "$python" -m pip install --upgrade --upgrade-strategy eager -e '.[dev]'
    "$python" scripts/check_lock.py --report
    exit 0
fi

# A CPU-only torch build installed beforehand (README) satisfies the lock's torch pin;
# then the CUDA runtime that PyPI's default build needs is left out.
locks=(-r requirements/lock.txt)
if "$python" -c 'import sys, torch; sys.exit(not torch.__version__.endswith("+cpu"))' 2>/dev/null; then
    echo "== keeping the installed CPU-only torch"
else
    locks+=(-r requirements/lock-cuda.txt)
fi
echo "== pip install ${locks[*]}"
"$python" -m pip install "${locks[@]}"
echo "== pip install --no-deps -e ."
"$python" -m pip install --no-deps -e .
"$python" scripts/check_lock.py
