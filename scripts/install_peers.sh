#!/usr/bin/env bash
# Creates the peers' virtual environment (.venv-peers by default) for the benchmarks that compare
# cape_hpc with the tools users would otherwise use: nnsight (>= 0.8), TransformerLens 4
# (TransformerBridge), repeng and steering-vectors, next to cape_hpc and the lock's versions of
# everything else.  `make peers` runs it; the benchmarks find it (CAPE_PEERS_PYTHON, default
# .venv-peers/bin/python).  Idempotent.
#
# Two peers declare pins the lock cannot meet, so they are installed without their dependencies:
# repeng pins numpy < 2 (it imports under numpy 2 except for one `np.float_` annotation; the
# benchmark sets `np.float_ = np.float64` before importing it) and steering-vectors pins
# transformers < 5 (it imports and runs under transformers 5).  TransformerLens 4 and nnsight get
# their own resolution of transformers / huggingface-hub / tokenizers / accelerate (their pins are
# dropped from the constraints), which today lands on the lock's versions anyway.
# Usage: install_peers.sh [PYTHON] [VENV] [LOCK]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
VENV=${2:-.venv-peers}
LOCK=${3:-requirements/lock.txt}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
LOOSE=$(mktemp)
trap 'rm -f "$LOOSE"' EXIT
grep -viE '^(transformers|huggingface-hub|tokenizers|accelerate)==' "$LOCK" > "$LOOSE"
$PIP install -q --upgrade -c "$LOCK" pip setuptools wheel
# CPU torch first so that nothing later pulls a CUDA build.
$PIP install -q -c "$LOCK" "torch==2.13.0"
$PIP install -q -c "$LOOSE" -e ./kernels -e ".[dev]" "nnsight>=0.8" "transformer-lens>=4" scikit-learn gguf
$PIP install -q --no-deps repeng steering-vectors
$PIP install -q --no-deps -r requirements/nodeps.txt
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
for d in ("torch", "transformers", "numpy", "nnsight", "transformer-lens", "repeng", "steering-vectors", "cape_hpc"):
    try:
        print(f"install_peers: {d} {md.version(d)}")
    except md.PackageNotFoundError:
        print(f"install_peers: {d} NOT INSTALLED")
EOF
