#!/usr/bin/env bash
# The main job on the embedded defaults: the whole benchmark-level analysis of the shipped data,
# a short internals and steering run on SmolLM2-135M, the dynamics fit, the reproduction audit,
# and one HTML report of it all.  Every step writes into one results file (the sweep: its merged file) in a
# fresh run directory.
set -euo pipefail
BIN=${1:-.venv/bin}
RUN=${CAPE_RUN_DIR:-runs/demo-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RUN"
H5="$RUN/results.h5"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
step() { echo; echo "==> cape $*"; "$BIN/cape" "$@"; }

step analyze --out "$H5"
step internals --model smollm2-135m --max-prompts 48 --batch-size 16 --out "$H5"
# steering: held-out correction/damage over a five-point alpha grid on a 12-item subset (seconds on 2
# cores); the full item set and the nine-point default grid: drop --max-items and --alphas
step steer --model smollm2-135m --max-items 12 --alphas -0.1 0.025 0.05 0.1 --max-neutral 6 --batch-size 32 \
    --max-prompts 4 --max-new-tokens 12 --out "$H5"
step dynamics --train Pythia --holdout OPT --model linear --out "$H5"
step predict --family Pythia --size 70B --out "$H5"
# the cross-model chain (docs/METHODS.md §3.10): the embedded real models and tiny models (jobs/smoke.yaml)
# and a tiny family of three sizes (jobs/family_tiny.yaml) swept into one folder (same prompts), merged,
# the cross-model table and ladders, and the internal claims
SWEEP="$RUN/sweep"
step sweep jobs/smoke.yaml --out-dir "$SWEEP"
step sweep jobs/family_tiny.yaml --out-dir "$SWEEP"
step merge "$SWEEP" -o "$RUN/sweep.h5"
step crossmodel "$RUN/sweep.h5" -n 1000 --out "$RUN/sweep.h5"
step figures "$RUN/sweep.h5" -o "$RUN/crossmodel_figs"
step figures "$H5" -o "$RUN/figs"
step reproduce --internals "$RUN/sweep.h5" --out "$H5"
# one report of the whole study: the analysis file (with the steering run and the audit) and the merged sweep
step report "$H5" "$RUN/sweep.h5" -o "$RUN/report.html"
echo
echo "results: $H5 $RUN/sweep.h5  figures: $RUN/figs $RUN/crossmodel_figs  report: $RUN/report.html"
