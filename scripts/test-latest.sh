#!/usr/bin/env bash
# Run the suite against the newest releases that pyproject.toml allows, not the lock,
# in a separate virtual environment (.venv-latest), and report what moved and what
# broke. It never changes the lock: when the suite passes, `bash scripts/lock.sh`
# takes the new releases in on purpose.
#
#   bash scripts/test-latest.sh [PYTEST ARGS...]    report: latest-report.txt
set -uo pipefail
cd "$(dirname "$0")/.."

venv=.venv-latest
report=latest-report.txt
python=${PYTHON:-python}
[[ -x $venv/bin/python ]] || "$python" -m venv "$venv" || exit 1
PYTHON=$venv/bin/python bash scripts/setup.sh --latest > "$report.install" 2>&1 || {
    echo "test-latest: the install of the newest releases failed; see $report.install" >&2
    tail -20 "$report.install" >&2
    exit 1
}
{
    echo "# pixguard against the newest releases ($(date -u +%Y-%m-%dT%H:%MZ))"
    sed -n '/packages differ from/,$p' "$report.install"
    echo
    echo "# pytest"
} > "$report"
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" 2>&1 | tee -a "$report" | tail -30
status=${PIPESTATUS[0]}
echo "test-latest: pytest exited $status; the full report is in $report"
exit "$status"
