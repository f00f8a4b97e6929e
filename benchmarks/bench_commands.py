"""`cape nc --estimator quadratic -n R` and `cape deff -n R` against a numpy loop and
``scipy.stats.bootstrap`` doing the same work, all measured in the same run.

Run:  .venv/bin/python benchmarks/bench_commands.py [-n 10000 100000] [--baseline-r 500] [--repeats 3]
      (``benchmarks/bench_bootstrap.py`` times the same calls under pytest-benchmark)

What is timed
-------------
* ``cape`` (in process): ``cape_hpc.cli.main([...argv..., "--json"])`` with its output discarded --
  the command itself (reading the table, every bootstrap the command runs, the JSON), warm (numba's
  kernels loaded, Python imported).  Best of ``--repeats``.
* ``cape`` (new process): the same argv through ``.venv/bin/cape`` as a user types it (no
  ``--json``: the printed tables), interpreter start-up and imports included; after one warm-up
  process, best of ``--repeats`` (wall seconds; CPU seconds beside them).  The in-process runs use
  numba (this benchmark imports it); a new ``cape nc`` process uses the backend
  ``cape_kernels.numpy_resample.resample_backend`` picks (numpy for the quadratic up to
  ``NUMPY_MAX_DRAWS`` row draws per bootstrap: no numba, scipy or pandas in the process).  Both
  backends give the same bits, so the two runs print the same numbers.
* ``numpy loop``: the same bootstraps written by hand -- for every scope the command bootstraps
  (``cape nc``: each family with >= 3 models, resampled within itself, and the pooled families,
  resampled within each family; ``cape deff``: the phases and all models, resampled within each
  family), the index matrix (numpy, the same counter-based streams) and per resample ``np.polyfit``
  (vertex in the window, as the command) or ``np.cov`` + ``np.linalg.eigvalsh``.  Timed on
  ``--baseline-r`` resamples per scope (best of ``--repeats``) and scaled linearly to R (its cost per
  resample is flat).  Its values are checked against the command's kernels on the same streams.
* ``scipy``: ``scipy.stats.bootstrap(method="percentile", vectorized=False)`` with the same
  per-resample statistic over the same scopes, unstratified (scipy has no stratified resampling;
  the closest it offers); timed on ``--baseline-r`` resamples and scaled.

The work per resample is tiny (a row gather and a handful of sums, docs/METHODS.md §2.4-2.5), so the
ratios measure interpreter and per-call overhead that the fused kernels remove.

Start-up (issue 22 item 5; ``--startup-only`` runs this part alone), in the same run:

* ``cape --help`` in a new process (best of ``--repeats``) against a bare ``python -c pass``: goal
  <= 0.3 s.
* ``cape nc --estimator quadratic -n R`` in a new process against the numpy loop (the table above,
  ``x np/proc``): goal >= 50x at R = 100,000 (the engine alone is ``x numpy``).
* The resident memory (``VmRSS``) of a new ``cape internals`` / ``cape steer`` process *before it
  computes*, against ``python -c "import torch, transformers"``: goal within 50 MB.  "Before
  computing" is the moment the command asks for its model: the probe replaces
  ``ModelOptions.load`` (the commands' first computation) by a function that reads ``VmRSS`` and
  stops the command, so every import the command made up to then is counted and nothing else.

Every new process runs as a user's does: Python's bytecode cache on (this repository's CI and helper
machines may set ``PYTHONDONTWRITEBYTECODE=1``, which recompiles every module at every start; the
variable is removed for these processes), after one warm-up run.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numba
import numpy as np
import pandas as pd
from scipy import stats

from cape_hpc.analysis.phases import phases
from cape_hpc.cli import main as cape_main
from cape_hpc.io.scores import SCORE_COLUMNS, load_scores
from cape_kernels.reference_resample import resample_indices_ref

ROOT = Path(__file__).resolve().parents[1]
SEED = 0                      # the commands' default seed
MIN_MODELS = 3
COMMANDS = {
    "cape nc --estimator quadratic": lambda R: ["nc", "--estimator", "quadratic", "-n", str(R)],
    "cape deff": lambda R: ["deff", "-n", str(R)],
}


# ----------------------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------------------
def run_command(argv: list[str]) -> None:
    """The command in this process, output discarded (``--json``: the whole result is encoded)."""
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cape_main([*argv, "--json"])
    if rc != 0:
        raise RuntimeError(f"cape {' '.join(argv)} exited {rc}")


def user_env() -> dict[str, str]:
    """The environment of a user's process: bytecode cached (no ``PYTHONDONTWRITEBYTECODE``)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def cape_exe() -> list[str]:
    exe = Path(sys.executable).with_name("cape")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cape_hpc.cli"]


def process_times(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of ``cmd`` in a new process (output discarded); the
    CPU time varies less than the wall time on a loaded machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT, env=user_env())
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def process_seconds(cmd: list[str]) -> float:
    """Wall seconds of ``cmd`` in a new process (output discarded)."""
    return process_times(cmd)[0]


def run_command_process(argv: list[str], repeats: int = 3) -> tuple[float, float]:
    """(wall, CPU) seconds of ``cape <argv>`` in a new process as a user runs it (bytecode cache
    on), after one warm-up run; best of ``repeats``."""
    process_times([*cape_exe(), *argv])                     # warm-up: the bytecode cache is written
    runs = [process_times([*cape_exe(), *argv]) for _ in range(repeats)]
    return min(w for w, _ in runs), min(c for _, c in runs)


# ----------------------------------------------------------------------------------------------
# the same bootstraps by hand: scopes (strata, one-resample statistic)
# ----------------------------------------------------------------------------------------------
def _sorted_family(df: pd.DataFrame, fam: str) -> pd.DataFrame:
    return df.loc[df["family"] == fam].sort_values(["params", "model"], kind="mergesort")


def nc_scopes(df: pd.DataFrame, b1="HS", b2="TQA"):
    """[(name, x, y, strata, lo, hi)] of every quadratic bootstrap `cape nc --estimator quadratic` runs."""
    sub = df.dropna(subset=[b1, b2])
    fams = list(dict.fromkeys(sub["family"]))
    out = []
    for f in fams:
        g = _sorted_family(sub, f)
        if len(g) >= MIN_MODELS:
            x = np.log10(g["params"].to_numpy(float))
            out.append((f, x, g[b2].to_numpy(float), None, x.min(), x.max()))
    g = pd.concat([_sorted_family(sub, f) for f in fams])
    x = np.log10(g["params"].to_numpy(float))
    codes = g["family"].map({f: i for i, f in enumerate(fams)}).to_numpy(np.int64)
    out.append(("pooled", x, g[b2].to_numpy(float), codes, x.min(), x.max()))
    return out


def deff_scopes(df: pd.DataFrame):
    """[(name, X, strata)] of every d_eff bootstrap `cape deff` runs (phases of HS/TQA, and all)."""
    ph = phases(df).phase_of()
    sub = df.dropna(subset=list(SCORE_COLUMNS))
    label = sub["model"].astype(str).map(ph).fillna("")
    out = []
    for gname in ("tax", "transition", "bonus", "all"):
        g = sub if gname == "all" else sub.loc[label == gname]
        if len(g) >= MIN_MODELS:
            out.append((gname, g[list(SCORE_COLUMNS)].to_numpy(float),
                        pd.factorize(g["family"])[0].astype(np.int64)))
    return out


def _vertex_np(xs, ys, lo, hi):
    if np.unique(xs).size < 3:
        return np.nan
    a, b, _ = np.polyfit(xs, ys, 2)           # uncentred, as one writes it by hand
    v = -b / (2 * a)
    return v if a > 0 and lo <= v <= hi else np.nan


def _deff_np(Xs):
    C = np.cov(Xs, rowvar=False)
    if not np.any(C):
        return np.nan
    lam = np.linalg.eigvalsh(C)
    return lam.sum() ** 2 / np.sum(lam * lam)


def work(name: str, df: pd.DataFrame):
    """[(n, strata, f(idx) -> float)] of the command's bootstraps."""
    if name.startswith("cape nc"):
        return [(len(x), s, (lambda i, x=x, y=y, lo=lo, hi=hi: _vertex_np(x[i], y[i], lo, hi)))
                for _, x, y, s, lo, hi in nc_scopes(df)]
    return [(len(X), s, (lambda i, X=X: _deff_np(X[i]))) for _, X, s in deff_scopes(df)]


def numpy_loop(jobs, R: int):
    """The hand-written bootstraps: index matrix (same streams) + a Python loop per resample."""
    return [np.array([f(row) for row in resample_indices_ref(s, R, SEED, n=n)]) for n, s, f in jobs]


def scipy_bootstrap(jobs, R: int):
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n, _, f in jobs:
            try:
                out.append(stats.bootstrap((np.arange(n),), f, vectorized=False, n_resamples=R,
                                           method="percentile", rng=np.random.default_rng(SEED)))
            except ValueError:     # e.g. a degenerate (constant) distribution in old scipy versions
                out.append(None)
    return out


def check_numpy_loop_equals_kernels(name: str, df: pd.DataFrame, samples: list[np.ndarray], R: int) -> None:
    """The hand-written loop sees the same streams: its values equal the command's kernels."""
    from cape_kernels import participation_ratio_boot, quadratic_nc_boot

    if name.startswith("cape nc"):
        ref = [quadratic_nc_boot(x, y, s, R, SEED, lo, hi) for _, x, y, s, lo, hi in nc_scopes(df)]
    else:
        ref = [participation_ratio_boot(X, s, R, SEED) for _, X, s in deff_scopes(df)]
    for a, b in zip(samples, ref):
        np.testing.assert_allclose(a, b, rtol=1e-9)


def best(f, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


def measure(name: str, Rs=(10_000, 100_000), baseline_r: int = 500, repeats: int = 3, process: bool = True,
            df: pd.DataFrame | None = None) -> list[dict]:
    """Rows {command, R, cape_s, cape_process_s, numpy_s, scipy_s, ...} measured now, interleaved."""
    df = load_scores() if df is None else df
    jobs = work(name, df)
    argv = COMMANDS[name]
    run_command(argv(64))                                   # load the kernels' cache, warm the imports
    samples = numpy_loop(jobs, baseline_r)
    check_numpy_loop_equals_kernels(name, df, samples, baseline_r)
    rows = []
    for R in Rs:
        t_cape = best(lambda: run_command(argv(R)), repeats)
        t_np = best(lambda: numpy_loop(jobs, baseline_r), repeats) * R / baseline_r
        t_sp = best(lambda: scipy_bootstrap(jobs, baseline_r), repeats) * R / baseline_r
        t_proc, cpu_proc = run_command_process(argv(R), repeats) if process else (math.nan, math.nan)
        rows.append({"command": f"{name} -n {R}", "R": R, "bootstraps": len(jobs), "cape_s": t_cape,
                     "cape_process_s": t_proc, "cape_process_cpu_s": cpu_proc, "numpy_loop_s": t_np, "scipy_s": t_sp,
                     "x_numpy": t_np / t_cape, "x_scipy": t_sp / t_cape,
                     "x_numpy_process": t_np / t_proc, "x_scipy_process": t_sp / t_proc,
                     "threads": numba.get_num_threads(), "baseline_r": baseline_r})
    return rows


def table(rows: list[dict]) -> list[str]:
    out = [f"{'command':<38} {'boots':>5} {'cape s':>8} {'new proc s':>10} {'numpy s':>9} {'scipy s':>9} "
           f"{'x numpy':>8} {'x scipy':>8} {'x np/proc':>9} {'x sp/proc':>9}"]
    for r in rows:
        out.append(f"{r['command']:<38} {r['bootstraps']:>5} {r['cape_s']:>8.3f} {r['cape_process_s']:>10.2f} "
                   f"{r['numpy_loop_s']:>9.1f} {r['scipy_s']:>9.1f} {r['x_numpy']:>8.0f} {r['x_scipy']:>8.0f} "
                   f"{r['x_numpy_process']:>9.0f} {r['x_scipy_process']:>9.0f}")
    return out


# ----------------------------------------------------------------------------------------------
# start-up: `cape --help`, the resident memory before computing (issue 22 item 5)
# ----------------------------------------------------------------------------------------------
#: `python -c RSS_PROBE ref` imports torch and transformers; `python -c RSS_PROBE <cape argv>` runs the
#: command until it asks for its model (ModelOptions.load), then prints VmRSS (MB) and the modules loaded
RSS_PROBE = """
import json, sys
def rss_mb():
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith('VmRSS:'))
if sys.argv[1:] == ['ref']:
    import torch, transformers
else:
    from cape_hpc.models.options import ModelOptions
    class Stop(Exception):
        pass
    def stop(self, *args, **kwargs):
        raise Stop
    ModelOptions.load = stop
    from cape_hpc import cli
    try:
        cli.main(sys.argv[1:])
        sys.exit('the command finished without asking for its model')
    except Stop:
        pass
heavy = ('torch', 'transformers', 'numba', 'pandas', 'scipy', 'h5py', 'matplotlib')
print(json.dumps({'rss_mb': rss_mb(), 'modules': len(sys.modules), 'heavy': [m for m in heavy if m in sys.modules]}))
"""
RSS_COMMANDS = {"cape internals": ["internals", "--model", "tiny-llama"],
                "cape steer": ["steer", "--model", "tiny-llama"]}


def rss_before_computing(argv: list[str]) -> dict:
    """{'rss_mb', 'modules', 'heavy'} of a new process: ``ref`` or a cape command up to its model load."""
    out = subprocess.run([sys.executable, "-c", RSS_PROBE, *argv], check=True, capture_output=True, text=True,
                         cwd=ROOT, env=user_env()).stdout
    return json.loads(out.strip().splitlines()[-1])


def startup(repeats: int = 5) -> dict:
    """{'help_s', 'python_s', 'rss': {name: probe}, 'rss_ref': probe} measured now, interleaved."""
    process_seconds([*cape_exe(), "--help"])                    # warm-up: bytecode cached
    bare, helps = [], []
    for _ in range(repeats):
        bare.append(process_times([sys.executable, "-c", "pass"]))
        helps.append(process_times([*cape_exe(), "--help"]))
    ref = rss_before_computing(["ref"])
    rss = {name: rss_before_computing(argv) for name, argv in RSS_COMMANDS.items()}
    return {"help_s": min(w for w, _ in helps), "python_s": min(w for w, _ in bare),
            "help_cpu_s": min(c for _, c in helps), "python_cpu_s": min(c for _, c in bare), "rss_ref": ref, "rss": rss}


def startup_table(s: dict, rows: list[dict]) -> list[str]:
    """The three start-up goals, each as measured in this run against its reference."""
    w = 46
    out = [f"{'start-up goal':<{w}} {'measured':>9} {'reference':>10} {'ratio/diff':>10} {'goal':>10}",
           f"{'cape --help (s) vs python -c pass':<{w}} {s['help_s']:>9.3f} {s['python_s']:>10.3f} "
           f"{s['help_s'] / s['python_s']:>9.1f}x {'<= 0.3 s':>10}",
           f"{'  the same in CPU seconds (user + system)':<{w}} {s['help_cpu_s']:>9.3f} {s['python_cpu_s']:>10.3f}"]
    nc = [r for r in rows if r["command"].startswith("cape nc")]
    if nc:
        r = max(nc, key=lambda r: r["R"])
        out.append(f"{'cape nc -n %d (s), new process vs numpy loop' % r['R']:<{w}} {r['cape_process_s']:>9.2f} "
                   f"{r['numpy_loop_s']:>10.1f} {r['x_numpy_process']:>9.0f}x {'>= 50x':>10}")
        out.append(f"{'  the same in CPU seconds (user + system)':<{w}} {r['cape_process_cpu_s']:>9.2f}")
        out.append(f"{'  the engine alone (in process)':<{w}} {r['cape_s']:>9.3f} {r['numpy_loop_s']:>10.1f} "
                   f"{r['x_numpy']:>9.0f}x")
    ref = s["rss_ref"]["rss_mb"]
    for name, probe in s["rss"].items():
        out.append(f"{name + ' RSS (MB) vs torch+transformers':<{w}} {probe['rss_mb']:>9.0f} {ref:>10.0f} "
                   f"{probe['rss_mb'] - ref:>+8.0f}MB {'<= +50 MB':>10}")
    for name, probe in s["rss"].items():
        out.append(f"  {name} had imported, before computing: {', '.join(probe['heavy']) or 'no heavy module'}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", "--n-resamples", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--baseline-r", type=int, default=int(os.environ.get("CAPE_BENCH_BASELINE_R", "500")))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-process", action="store_true", help="skip the new-process timing")
    p.add_argument("--startup-only", action="store_true", help="only the start-up goals (--help, RSS)")
    a = p.parse_args(argv)
    rows = []
    if not a.startup_only:
        for name in COMMANDS:
            rows += measure(name, tuple(a.n_resamples), a.baseline_r, a.repeats, not a.no_process)
        print(f"numba threads: {numba.get_num_threads()}; baselines timed on {a.baseline_r} resamples per "
              f"bootstrap (best of {a.repeats}) and scaled linearly; cape in process: best of {a.repeats}, warm, "
              f"numba kernels; new process: as a user types it (no --json), bytecode cache on "
              f"(PYTHONDONTWRITEBYTECODE removed), after one warm-up run, best of {a.repeats}, start-up included, "
              f"the backend resample_backend picks (same numbers)")
        print("\n".join(table(rows)))
        print()
    s = startup(max(a.repeats, 5))
    print(f"start-up: new processes with the bytecode cache on, best of {max(a.repeats, 5)} (--help); "
          f"RSS = VmRSS when the command asks for its model")
    print("\n".join(startup_table(s, [r for r in rows if not math.isnan(r["cape_process_s"])])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
