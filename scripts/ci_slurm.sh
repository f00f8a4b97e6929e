#!/usr/bin/env bash
# CI: run both sbatch templates for real on a one-node Slurm started here, then check the results.
#
#   bash scripts/ci_slurm.sh [JOB.yaml]      (default jobs/smoke_tiny.yaml; needs root and apt-get)
#
# 1. installs slurm-wlm and munge (apt-get) if missing;
# 2. starts munged (as the munge user) and slurmctld/slurmd with every file under one temporary
#    state directory (the recipe is written out in slurm/README.md, "A one-node Slurm for tests");
# 3. submits slurm/sweep_array.sbatch (one model per task, throttled %2) into results dir A and
#    slurm/sweep.sbatch (srun --mpi=pmi2, 2 ranks) into results dir B, then resubmits the array job
#    into B after the MPI job (mixing templates: every model must be skipped);
# 4. waits by polling `scontrol show job` (no accounting on this node), checks every job COMPLETED
#    with exit code 0, merges A and B and checks both hold every model with equal numbers;
# 5. stops the daemons by PID (trap on exit) and removes the state directory.
# Environment: CAPE_SLURM_KEEP=1 keeps the state directory; CAPE_SLURM_TIMEOUT (s, default 900).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
JOB=${1:-jobs/smoke_tiny.yaml}
VENV=${CAPE_VENV:-$REPO/.venv}
TIMEOUT=${CAPE_SLURM_TIMEOUT:-900}
log() { echo "ci_slurm: $*" >&2; }

[ "$(id -u)" = 0 ] || { log "needs root (apt-get, munge user)"; exit 77; }
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  log "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 || {
    apt-get update -qq && apt-get install -y -qq slurm-wlm munge >/dev/null; }
fi

STATE=$(mktemp -d /tmp/cape-slurm.XXXXXX)
chmod 0755 "$STATE"
DAEMON_PIDS=()
cleanup() {
  rc=$?
  for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" "$STATE/munge/munged.pid"; do
    if [ -s "$pidfile" ]; then
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  if [ $rc -ne 0 ]; then
    log "FAILED (rc=$rc); logs:"
    for f in "$STATE"/log/*.log "$STATE"/out/*.out; do [ -f "$f" ] && { echo "== $f"; tail -n 40 "$f"; }; done >&2
  fi
  [ "${CAPE_SLURM_KEEP:-0}" = 1 ] && log "state kept in $STATE" || rm -rf "$STATE"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- munge
M=$STATE/munge
mkdir -p "$M/etc" "$M/lib" "$M/log" "$M/run"
dd if=/dev/urandom of="$M/etc/munge.key" bs=1024 count=1 status=none
chown -R munge:munge "$M"
chmod 0700 "$M/etc" "$M/lib" "$M/log"; chmod 0755 "$M/run"; chmod 0400 "$M/etc/munge.key"
SOCK=$M/run/munge.socket.2
runuser -u munge -- munged --key-file="$M/etc/munge.key" --socket="$SOCK" --pid-file="$M/munged.pid" \
  --log-file="$M/log/munged.log" --seed-file="$M/lib/munged.seed"
for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { log "munged did not start"; exit 1; }

# ---------------------------------------------------------------- slurm
mkdir -p "$STATE/spool/localhost" "$STATE/state" "$STATE/log" "$STATE/out"
read -r CTLD_PORT SLURMD_PORT < <("$VENV/bin/python" - <<'PY'
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
PY
)
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
export SLURM_CONF=$STATE/slurm.conf
cat > "$SLURM_CONF" <<CONF
ClusterName=capeci
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmi2
ReturnToService=2
MinJobAge=3600
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=ci Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF" -N localhost
for _ in $(seq 100); do
  state=$(scontrol show node localhost 2>/dev/null | sed -n 's/.*State=\([A-Z+_]*\).*/\1/p' | head -1)
  case "$state" in IDLE*|MIXED*|ALLOCATED*) break ;; esac
  sleep 0.2
done
log "one-node Slurm up (ports $CTLD_PORT/$SLURMD_PORT, node state ${state:-?})"
case "$state" in IDLE*) ;; *) log "node not idle"; exit 1 ;; esac

# ---------------------------------------------------------------- submit
cd "$REPO"
A=$STATE/results_array
B=$STATE/results_mpi
N=$("$VENV/bin/cape" sweep "$JOB" --count)
export CAPE_VENV=$VENV CAPE_REPO=$REPO HF_HOME=${HF_HOME:-$STATE/hf}
# every job of this test stamps its shards with the code version of the checkout at submission
# (in a checkout that others edit meanwhile, shards of later jobs would otherwise be refused as
# other provenance -- which is the right behaviour for real sweeps, but not what this test checks)
export CAPE_SWEEP_CODE_VERSION=${CAPE_SWEEP_CODE_VERSION:-$("$VENV/bin/python" -c \
  'from cape_hpc.sweep.shards import shard_code_version; print(shard_code_version())')}
export CAPE_CACHE=${CAPE_CACHE:-$HOME/.cache/cape_hpc/models}
ARR=$(sbatch --parsable --array=0-$((N - 1))%2 -o "$STATE/out/array-%A_%a.out" slurm/sweep_array.sbatch "$JOB" "$A")
MPI=$(sbatch --parsable --ntasks=2 -o "$STATE/out/mpi-%j.out" slurm/sweep.sbatch "$JOB" "$B")
MIX=$(sbatch --parsable --dependency=afterok:$MPI --array=0-$((N - 1))%2 -o "$STATE/out/mix-%A_%a.out" \
      slurm/sweep_array.sbatch "$JOB" "$B")
log "submitted array $ARR ($N tasks, %2), MPI $MPI (2 ranks), array $MIX into the MPI results (after $MPI)"

# ---------------------------------------------------------------- wait (no sacct: poll scontrol)
job_states() { scontrol -o show job "$1" | sed -n 's/.*JobState=\([A-Z_]*\).*ExitCode=\([0-9:]*\).*/\1 \2/p'; }
deadline=$((SECONDS + TIMEOUT))
for id in $ARR $MPI $MIX; do
  while :; do
    states=$(job_states "$id")
    if [ -n "$states" ] && ! grep -qE '^(PENDING|RUNNING|CONFIGURING|COMPLETING|SUSPENDED|REQUEUED)' <<<"$states"; then
      break
    fi
    [ $SECONDS -lt $deadline ] || { log "timeout waiting for job $id: $states"; scancel "$ARR" "$MPI" "$MIX" || true; exit 1; }
    sleep 1
  done
  bad=$(grep -vE '^COMPLETED 0:0$' <<<"$states" || true)
  [ -z "$bad" ] || { log "job $id did not complete cleanly: $bad"; exit 1; }
  log "job $id: $(wc -l <<<"$states") task(s) COMPLETED 0:0"
done

# ---------------------------------------------------------------- check
"$VENV/bin/cape" merge "$A" -o "$STATE/array.h5" --job "$JOB"
"$VENV/bin/cape" merge "$B" -o "$STATE/mpi.h5" --job "$JOB"
"$VENV/bin/python" - "$JOB" "$A" "$B" "$STATE/array.h5" "$STATE/mpi.h5" "$ARR" "$MPI" "$MIX" <<'PY'
import json, sys
import numpy as np
from cape_hpc.io.store import read_results
from cape_hpc.sweep.spec import load_job

job, A, B, fa, fb, arr, mpi, mix = sys.argv[1:]
names = sorted(m.name for m in load_job(job).models)
ta, tb = read_results(fa), read_results(fb)
assert sorted(ta["internals"]) == names == sorted(tb["internals"]), (sorted(ta["internals"]), names)

from cape_hpc.internals.results import InternalsResult

VIEWS = ("layer_coupling", "layer_pairwise_mean", "layer_competing_fraction", "d_rep", "head_coupling")
n = 0
for name in names:
    a, b = (InternalsResult.from_tree(t["internals"][name], where=f"/internals/{name}") for t in (ta, tb))
    for view in VIEWS:
        x, y = getattr(a, view), getattr(b, view)
        assert x.size, (name, view)
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=f"{name} {view}")
        n += 1
ma, mb = (json.load(open(f"{d}/manifest.json")) for d in (A, B))
assert all(v["status"] == "done" for v in ma["models"].values()), ma["models"]
runs_b = mb["runs"]
mpi_runs = [r for k, r in runs_b.items() if k.startswith(f"slurm{mpi}-")]
assert len(mpi_runs) == 1 and mpi_runs[0]["ranks"] == 2, runs_b
assert mpi_runs[0]["counts"]["done"] == len(names), mpi_runs
mix_runs = [r for k, r in runs_b.items() if k.startswith(f"slurm{mix}_")]
assert len(mix_runs) == len(names) and all(r["counts"]["skipped"] == 1 and r["counts"]["done"] == 0 for r in mix_runs), mix_runs
ranks = sorted({v["rank"] for v in mb["models"].values()})
print(f"ci_slurm: OK: {len(names)} models from the array job and the MPI job (ranks used: {ranks}), "
      f"{n} arrays equal within 1e-5; resubmitted array into the MPI results skipped all {len(names)}")
PY
