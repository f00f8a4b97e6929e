#!/usr/bin/env bash
# `make test-latest`: the test suite against the newest releases of every dependency, in a venv of
# its own (not the lock), so that an upstream change is seen on purpose.  torch stays the CPU build
# the lock names (PyPI's newer torch is a CUDA build of several GB); everything else is the newest.
# Prints the date and each package whose version differs from requirements/lock.txt, then the tests.
# Usage: test_latest.sh [PYTHON] [VENV] [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
VENV=${2:-.venv-latest}
shift $(( $# < 2 ? $# : 2 ))
rm -rf "$VENV"
bash scripts/install_deps.sh "$PY" "$VENV" none
echo "test-latest on $(date -u +%Y-%m-%d): versions that differ from requirements/lock.txt:"
"$VENV/bin/python" - <<'PY'
import re
from importlib.metadata import distributions
lock = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", open("requirements/lock.txt").read(), re.M))
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
lock = {norm(k): v for k, v in lock.items()}
for d in sorted(distributions(), key=lambda d: norm(d.metadata["Name"])):
    name = norm(d.metadata["Name"])
    if name in lock and lock[name] != d.version.split("+")[0]:
        print(f"  {name}: lock {lock[name]} -> {d.version}")
PY
export PYTHONUNBUFFERED=1
"$VENV/bin/python" -m pytest -q tests -p no:cacheprovider "$@"
