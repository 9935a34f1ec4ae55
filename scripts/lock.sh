#!/usr/bin/env bash
# Refresh the lock: the newest releases that pyproject.toml's ranges and
# requirements/pins.txt allow, for Python 3.11 on Linux x86-64, resolved by uv.
#   requirements/lock.txt       everything pixguard and its dev extras install
#   requirements/lock-cuda.txt  the CUDA runtime that PyPI's default torch build pulls in
# Review the diff, run `bash scripts/setup.sh && pytest`, then commit both files.
# Extra arguments go to `uv pip compile` (e.g. --upgrade-package fastapi).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v uv >/dev/null || python -m pip install -q uv

resolve=(uv pip compile pyproject.toml --extra dev -c requirements/pins.txt
    --python-version 3.11 --python-platform x86_64-manylinux_2_28)

# torch's CUDA runtime stays out of the main lock, so that the CPU-only build of torch
# (README) installs from it without pulling in several GB of CUDA libraries.
cuda_runtime=$("${resolve[@]}" --no-header --no-annotate "$@" 2>/dev/null \
    | grep -E '^(nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+|triton)==')
[[ -n $cuda_runtime ]] || { echo "lock: resolution failed (run it without 2>/dev/null)" >&2; exit 1; }

not_emitted=()
for pin in $cuda_runtime; do not_emitted+=(--no-emit-package "${pin%%==*}"); done
"${resolve[@]}" "${not_emitted[@]}" --custom-compile-command "bash scripts/lock.sh" \
    --output-file requirements/lock.txt "$@"

{
    echo "# The CUDA runtime of the torch build pinned in requirements/lock.txt."
    echo "# Written by: bash scripts/lock.sh. scripts/setup.sh installs it unless a CPU-only"
    echo "# build of torch is already installed."
    echo "$cuda_runtime"
} > requirements/lock-cuda.txt
