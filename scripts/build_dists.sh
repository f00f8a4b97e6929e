#!/usr/bin/env bash
# Builds the two distributions (make wheels): cape_kernels from ./kernels and cape_hpc from the root,
# each an sdist and a wheel built from that sdist (python -m build), into OUT, and checks them with
# `twine check --strict`.  Usage: build_dists.sh [PYTHON] [OUT] [SRC]; SRC is the tree to build
# (default: this repository; tests build a copy so that no build folder lands in the checkout).
set -euo pipefail
PYTHON=${1:-.venv/bin/python}
OUT=${2:-dist}
SRC=${3:-$(cd "$(dirname "$0")/.." && pwd)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
"$PYTHON" -m build --outdir "$OUT" "$SRC/kernels"
"$PYTHON" -m build --outdir "$OUT" "$SRC"
"$PYTHON" -m twine check --strict "$OUT"/*
