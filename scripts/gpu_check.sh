#!/usr/bin/env bash
# `make gpu-check`: the GPU path proven on a fresh GPU machine in one unattended command (issue 24).
# The machine's image has Python 3.12, torch, triton, cupy, numba, transformers, h5py, accelerate,
# pandas, scipy, pytest and pytest-benchmark, no network and nothing of ours: `make gpu-wheels`
# (scripts/gpu_wheels.sh, on a CPU machine) puts our two wheels and the pure-Python dependencies the
# image lacks into gpu_wheels/, which travels with the repository.  This script
#   1. makes a venv over the image's packages (--system-site-packages) and installs gpu_wheels/ into
#      it with --no-deps --no-index (cape_hpc is imported from the wheel, never from the checkout);
#   2. runs, within BUDGET seconds (default 480) all told, each step under its own timeout, going on
#      after a failed step: the GPU-marked tests (pytest -m gpu), compute-sanitizer memcheck over a
#      small extraction and a small steering pass (racecheck when time is left), `cape bench --device
#      cuda --csv`, extraction throughput against the bare forward at batch 64 on Pythia-1.4B's
#      architecture with random weights (scripts/pythia-1.4b.config.json), the steering grid
#      benchmark, and a model split between the GPU and the CPU against the one-GPU run;
#   3. writes gpu_check.json (every step: status, seconds, figures), summary.md, bench.csv,
#      pytest_gpu.xml and one log per step into $OUT when set (the device tool collects it), else
#      results/gpu_check-<UTC time>/ (or --out DIR).
# --dry-run prints the plan and runs only step 1 (into a temporary venv), env and the summary: CPU-safe,
# run by tests/test_gpu_check.py.  When PYTHON is itself a venv's interpreter (the CPU test), that
# venv's packages stand in for the image's.
# Usage: gpu_check.sh [--dry-run] [--python PY] [--wheels DIR] [--out DIR] [--budget SECONDS]
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
WHEELS=$REPO/gpu_wheels
RES=${OUT:-}
BUDGET=480
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --python) PY=$2; shift ;;
    --wheels) WHEELS=$2; shift ;;
    --out) RES=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$RES" ] || RES=$REPO/results/gpu_check-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RES" && RES=$(cd "$RES" && pwd)
WHEELS=$(cd "$WHEELS" 2>/dev/null && pwd || echo "$WHEELS")
case "$PY" in */*) PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY") ;; esac   # steps run elsewhere
cd "$REPO"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
VENV=$WORK/venv
VPY=$VENV/bin/python
STEPS=$RES/steps.tsv
: >"$STEPS"
START=$(date +%s)
DEADLINE=$((START + BUDGET))
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false CAPE_CACHE=$WORK/cape-cache

# the step plan: name, its own time limit (s), what it runs
PLAN="install          45  venv over the image's packages + gpu_wheels/ (--no-deps --no-index), imports checked
env              15  device, driver and library versions
pytest_gpu      140  pytest -m gpu over the test files with GPU cases
memcheck_extract 45  compute-sanitizer --tool memcheck: tiny extraction on CUDA
memcheck_steer   45  compute-sanitizer --tool memcheck: tiny steered scoring + generation on CUDA
bench            80  cape bench --device cuda --csv bench.csv (roofline vs copy bandwidth and matmul rate)
throughput       50  extraction vs bare forward, batch 64, Pythia-1.4B config, random bf16 weights
steering_grid    50  nine-point alpha grid vs one alpha, shared prefix vs whole rows (benchmarks/bench_steering.py), same model
split            25  tiny models split GPU + CPU offload vs one GPU: extraction and steered scores
racecheck        60  compute-sanitizer --tool racecheck: tiny extraction (only if time is left)"

limit_of() {  # a step's limit (a dry run on a busy CPU machine: 600 s each)
  if [ "$DRY" = 1 ]; then echo 600; else echo "$PLAN" | awk -v n="$1" '$1 == n {print $2}'; fi
}

record() {  # name status rc seconds limit note
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$STEPS"
}

step() {  # step NAME CMD...: CMD under the smaller of NAME's limit and the time left; the outcome recorded
  local name=$1 limit t left t0 rc=0 secs st
  shift
  limit=$(limit_of "$name")
  left=$((DEADLINE - $(date +%s)))
  t=$limit
  [ "$left" -lt "$t" ] && t=$left
  if [ "$t" -lt 10 ]; then
    record "$name" skipped 0 0 "$limit" "no time left"
    echo "gpu_check: $name skipped (no time left)"
    return 0
  fi
  echo "gpu_check: $name (limit ${t}s)"
  t0=$(date +%s.%N)
  if declare -F "$1" >/dev/null; then set -- bash -c "$*"; fi    # a function of this script (exported)
  (cd "$WORK" && timeout -k 15 "$t" "$@") >"$RES/$name.log" 2>&1 || rc=$?
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  case $rc in 0) st=ok ;; 124|137) st=timeout ;; *) st=failed ;; esac
  record "$name" "$st" "$rc" "$secs" "$t" ""
  echo "gpu_check: $name $st (rc $rc, ${secs}s)"
  [ "$st" = ok ] || tail -5 "$RES/$name.log" | sed 's/^/    /'
}

make_venv() {  # $VENV over $PY's packages; without the venv module: a folder on PYTHONPATH and wrappers
  if "$PY" -m pip --version >/dev/null 2>&1 && "$PY" -m venv --system-site-packages --without-pip "$VENV"; then
    PIP=("$PY" -m pip --python "$VPY")
  elif "$PY" -m venv --system-site-packages "$VENV"; then
    PIP=("$VPY" -m pip)
  else
    echo "no venv module: installing into $VENV/site (PYTHONPATH) instead"
    rm -rf "$VENV" && mkdir -p "$VENV/bin" "$VENV/site" || return 1
    printf '#!/bin/sh\nPYTHONPATH="%s/site${PYTHONPATH:+:$PYTHONPATH}" exec "%s" "$@"\n' "$VENV" "$PY" >"$VPY"
    printf '#!/bin/sh\nexec "%s" -P -m cape_hpc.cli "$@"\n' "$VPY" >"$VENV/bin/cape"
    chmod +x "$VPY" "$VENV/bin/cape"
    PIP=("$PY" -m pip install --target "$VENV/site")
    return 0
  fi
  PIP+=(install)
}

install_wheels() {  # the venv, the wheels, and cape_hpc imported from the venv (not the checkout)
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "no wheels in $WHEELS: run make gpu-wheels first"; return 2; }
  local site parent
  make_venv || return 1
  parent=$("$PY" -c 'import sys, sysconfig; print(sysconfig.get_paths()["purelib"] if sys.prefix != sys.base_prefix else "")')
  if [ -n "$parent" ] && [ -f "$VENV/pyvenv.cfg" ]; then   # PYTHON is a venv's (the CPU test): its packages play the image's
    site=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$parent" >"$site/_gpu_check_image.pth"
  fi
  "${PIP[@]}" -q --no-deps --no-index --find-links "$WHEELS" "$WHEELS"/*.whl || return 1
  "$VPY" -P -c '
import sys, cape_hpc, cape_kernels
venv = sys.argv[1]
for m in (cape_hpc, cape_kernels):
    assert m.__file__.startswith(venv), f"{m.__name__} imported from {m.__file__}, not the venv {venv}"
print("cape_hpc", cape_hpc.__file__)' "$VENV" || return 1
  "$VENV/bin/cape" --help >/dev/null || return 1
  "$VPY" -P "$REPO/scripts/gpu_check_steps.py" --help >/dev/null
}

export -f install_wheels make_venv
export PY VENV VPY WHEELS REPO

sanitizer() {  # compute-sanitizer: on PATH, in the CUDA toolkit, or in an nvidia-* wheel
  local c
  for c in "$(command -v compute-sanitizer)" "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" \
           /usr/local/cuda*/bin/compute-sanitizer \
           "$("$VPY" -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null)"/nvidia/*/compute-sanitizer/compute-sanitizer; do
    [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}

sanitize() {  # sanitize NAME TOOL SUBCOMMAND
  local san
  if ! san=$(sanitizer); then
    record "$1" skipped 0 0 "$(limit_of "$1")" "compute-sanitizer not found"
    echo "gpu_check: $1 skipped (compute-sanitizer not found)"
    return 0
  fi
  step "$1" "$san" --tool "$2" --error-exitcode 9 --print-limit 50 "$VPY" -P "$STEP_PY" "$3" --json "$RES/$1.json"
}

echo "gpu_check: results in $RES; budget ${BUDGET}s; wheels from $WHEELS; Python $("$PY" -c 'import sys; print(sys.version.split()[0])')"
echo "$PLAN" | sed 's/^/  plan: /'
STEP_PY=$REPO/scripts/gpu_check_steps.py
if [ "$DRY" = 1 ]; then
  DEADLINE=$(($(date +%s) + 1200))
  step install install_wheels
  step env "$VPY" -P "$STEP_PY" env --json "$RES/env.json"
else
  step install install_wheels
  step env "$VPY" -P "$STEP_PY" env --json "$RES/env.json"
  mapfile -t GPU_TESTS < <(grep -l -E "mark\.gpu|kernel_backends" "$REPO"/tests/test_*.py)
  # pytest-timeout's session limit ends the run itself (its report and XML kept) before the step's timeout
  step pytest_gpu "$VPY" -P -m pytest -c "$REPO/pytest.ini" --rootdir "$REPO" -p no:cacheprovider -m gpu -q -rs \
       --session-timeout $(($(limit_of pytest_gpu) - 15)) --junitxml "$RES/pytest_gpu.xml" "${GPU_TESTS[@]}"
  sanitize memcheck_extract memcheck extract-small
  sanitize memcheck_steer memcheck steer-small
  step bench "$VENV/bin/cape" bench --device cuda --repeats 3 --csv "$RES/bench.csv"
  step throughput "$VPY" -P "$STEP_PY" throughput --json "$RES/throughput.json"
  step steering_grid "$VPY" -P "$STEP_PY" steering-grid --json "$RES/steering_grid.json"
  step split "$VPY" -P "$STEP_PY" split --json "$RES/split.json"
  if [ $((DEADLINE - $(date +%s))) -ge "$(limit_of racecheck)" ]; then
    sanitize racecheck racecheck extract-small
  else
    record racecheck skipped 0 0 "$(limit_of racecheck)" "no time left"
  fi
fi
total=$(($(date +%s) - START))
echo "gpu_check: steps done in ${total}s"
if [ -x "$VPY" ]; then SUMPY=$VPY; else SUMPY=$PY; fi
timeout 60 "$SUMPY" -P "$STEP_PY" summarize "$RES"
! awk -F'\t' '$2 != "ok" && $2 != "skipped" {bad = 1} END {exit !bad}' "$STEPS"
