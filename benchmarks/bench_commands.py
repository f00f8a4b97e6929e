"""`cape nc --estimator quadratic -n R` and `cape deff -n R` against a numpy loop and
``scipy.stats.bootstrap`` doing the same work, all measured in the same run.

Run:  .venv/bin/python benchmarks/bench_commands.py [-n 10000 100000] [--baseline-r 500] [--repeats 3]
      (``benchmarks/bench_bootstrap.py`` times the same calls under pytest-benchmark)

What is timed
-------------
* ``cape`` (in process): ``cape_hpc.cli.main([...argv..., "--json"])`` with its output discarded --
  the command itself (reading the table, every bootstrap the command runs, the JSON), warm (numba's
  kernels loaded, Python imported).  Best of ``--repeats``.
* ``cape`` (new process): the same argv through ``.venv/bin/cape`` as a user types it, interpreter
  start-up and imports included.  One run each.
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
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
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


def run_command_process(argv: list[str]) -> float:
    """Wall seconds of ``cape <argv> --json`` in a new process."""
    exe = Path(sys.executable).with_name("cape")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cape_hpc.cli"]
    t = time.perf_counter()
    subprocess.run([*cmd, *argv, "--json"], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - t


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
        t_proc = run_command_process(argv(R)) if process else math.nan
        rows.append({"command": f"{name} -n {R}", "R": R, "bootstraps": len(jobs), "cape_s": t_cape,
                     "cape_process_s": t_proc, "numpy_loop_s": t_np, "scipy_s": t_sp,
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", "--n-resamples", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--baseline-r", type=int, default=int(os.environ.get("CAPE_BENCH_BASELINE_R", "500")))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-process", action="store_true", help="skip the new-process timing")
    a = p.parse_args(argv)
    rows = []
    for name in COMMANDS:
        rows += measure(name, tuple(a.n_resamples), a.baseline_r, a.repeats, not a.no_process)
    print(f"numba threads: {numba.get_num_threads()}; baselines timed on {a.baseline_r} resamples per "
          f"bootstrap (best of {a.repeats}) and scaled linearly; cape in process: best of {a.repeats}, warm; "
          f"new process: one run, start-up included")
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
