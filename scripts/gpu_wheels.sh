#!/usr/bin/env bash
# `make gpu-wheels`: everything scripts/gpu_check.sh installs on the GPU machine, built here (a CPU
# machine with network) into DIR (default gpu_wheels/, ignored by git): the two wheels of this
# repository (scripts/build_dists.sh; the sdists are dropped) and the pure-Python dependencies of
# setup.py / kernels/pyproject.toml that the GPU image lacks, at the versions of requirements/lock.txt,
# for CPython 3.12 on manylinux x86_64.  The image (Python 3.12, torch, triton, cupy-cuda13x, numba,
# transformers and what it pulls in: pyyaml, tqdm, safetensors, huggingface-hub; h5py, accelerate,
# pandas, scipy, pytest, pytest-benchmark) has the rest.  Not in the wheelhouse: matplotlib and
# scikit-learn (compiled, ~20 MB; only the figures and `cape dynamics` import them, not the GPU check).
# The repository (tracked and untracked, not ignored files) plus DIR must stay under 64 MiB, the one
# transfer to the GPU machine: checked at the end (exit 1 above).
# Usage: gpu_wheels.sh [PYTHON] [DIR]
set -euo pipefail
PY=${1:-.venv/bin/python}
DIR=${2:-gpu_wheels}
cd "$(dirname "$0")/.."
REPO=$PWD
LOCK=requirements/lock.txt
# pure-Python distributions the image lacks: cape_hpc's own (plotly, gguf, pysindy) and what they pull
# in, and pytest-timeout (pytest.ini's addopts name --timeout)
WHEELHOUSE=(plotly narwhals gguf pysindy derivative pytest-timeout cycler pyparsing joblib threadpoolctl)
# what the image has (tests/test_gpu_check.py: every dependency of the two distributions is in one of
# these lists, so a new one cannot be forgotten) and what is left out on purpose (compiled, not needed)
IMAGE=(torch triton cupy-cuda13x numba transformers h5py accelerate pandas scipy pytest pytest-benchmark
       numpy pyyaml tqdm safetensors huggingface-hub)
LEFT_OUT=(matplotlib scikit-learn)
LIMIT_MIB=64

pin() {  # the lock's "name==version" line of distribution $1
  local want line
  want=$(echo "$1" | tr 'A-Z_.' 'a-z--')
  line=$(grep -i -E "^${want}==" "$LOCK" || true)
  [ -n "$line" ] || { echo "gpu_wheels: $1 is not pinned in $LOCK" >&2; exit 2; }
  echo "$line"
}

rm -rf "$DIR"
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bash scripts/build_dists.sh "$PY" "$tmp/dist" "$REPO" >"$tmp/build.log" 2>&1 || { tail -30 "$tmp/build.log" >&2; exit 1; }
cp "$tmp"/dist/*.whl "$DIR"/
pins=()
for name in "${WHEELHOUSE[@]}"; do pins+=("$(pin "$name")"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DIR" "${pins[@]}"
for f in "$DIR"/*.whl; do
  case "$f" in *-py3-none-any.whl|*-py2.py3-none-any.whl) ;;
    *) echo "gpu_wheels: $(basename "$f") is not pure Python" >&2; exit 1 ;; esac
done

# the size of what travels: the repository's files (tracked and untracked, not ignored) + DIR
repo_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null \
             | awk '{s += $1} END {print s + 0}')
wheel_bytes=$(du -sb "$DIR" | cut -f1)
total=$((repo_bytes + wheel_bytes))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
echo "gpu_wheels: $(ls "$DIR" | wc -l) wheels in $DIR ($(mib "$wheel_bytes") MiB); repository $(mib "$repo_bytes") MiB;" \
     "together $(mib "$total") MiB (limit $LIMIT_MIB MiB)"
if [ "$total" -ge $((LIMIT_MIB * 1048576)) ]; then
  echo "gpu_wheels: repository + wheelhouse is $(mib "$total") MiB, over the $LIMIT_MIB MiB of one transfer" >&2
  exit 1
fi
