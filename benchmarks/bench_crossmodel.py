"""`cape crossmodel`'s N_c bootstrap: the fused N_c statistics (``TwoLevelNcStatistic``, one kernel
call per chunk of resamples) against the per-resample path it replaced (``TwoLevelStatistic``, one
kernel call per resample), measured in the same run on the same synthetic ladders.

Run:  .venv/bin/python -m pytest benchmarks/bench_crossmodel.py --benchmark-only -s
      .venv/bin/python benchmarks/bench_crossmodel.py          (the same table as a script)

Sizes (``CAPE_BENCH_CROSSMODEL=families,models,resamples``, default 5,8,2000 -- the default
``-n`` of `cape crossmodel`): families x models synthetic internals results (tests/crossmodel_fixture.py,
12 layers, 16 prompt blocks), every family with block statistics (the two-level bootstrap).

Rows: the three N_c estimators' bootstraps alone (what item 7 of issue 22 changes), the whole
``cross_model_analysis`` (block bootstraps included) with everything fused against everything per
resample, and with only the slope and fixed-point bootstraps per resample (``per_resample_rows``:
``ols_line`` / ``fixed_point_xy`` one resample at a time, as before the batched fits); every path
gives the same numbers (tests/test_crossmodel_fused.py).  The one-at-a-time arm runs today's
``ols_line`` / ``fixed_point_xy``, which are one row of the batched fits and cost more per call than
the scalar code they replaced: compare against the previous commit for before/after.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_commands import best  # noqa: E402
from crossmodel_fixture import synthetic_internals  # noqa: E402

from cape_hpc.crossmodel import families  # noqa: E402
from cape_hpc.crossmodel.families import TwoLevelStatistic, cross_model_analysis  # noqa: E402
from cape_hpc.crossmodel.options import CrossModelOptions  # noqa: E402
from cape_hpc.crossmodel.table import ModelInput, model_replicates  # noqa: E402
from cape_hpc.stats import bootstrap  # noqa: E402

SUITE = "crossmodel N_c: fused vs per resample"


def sizes() -> tuple[int, int, int]:
    f, m, r = (int(v) for v in os.environ.get("CAPE_BENCH_CROSSMODEL", "5,8,2000").split(","))
    return f, m, r


def inputs(n_families: int, n_models: int) -> list[ModelInput]:
    out = []
    for f in range(n_families):
        for m in range(n_models):
            c = np.clip(0.5 + 0.3 * np.sin(np.linspace(0, 3, 12) + f + m), -0.9, 0.9)
            res, _ = synthetic_internals(f"F{f}-M{m}", c, seed=100 * f + m, D=32, n_r=32, n_t=32, n_blocks=16)
            out.append(ModelInput(res, f"mem:/internals/F{f}-M{m}", f"Fam{f}", 10 ** (8 + 0.3 * m), "spec"))
    return out


def per_resample(estimator, x, point, reps, lo, hi, attach):
    """The path before the fused statistics (as tests/test_crossmodel_fused.py's reference)."""
    from cape_kernels import gamma_nc_batch, quadratic_nc_batch

    fam = np.zeros(x.size, dtype=np.int64)
    if estimator == "quadratic":
        def fn(vals, idx):
            return quadratic_nc_batch(x, np.nan_to_num(vals, nan=0.0), idx[None, :], lo, hi)[0]
    else:
        def fn(vals, idx):
            return gamma_nc_batch(estimator, fam, x, x, vals, idx[None, :], 0.0, lo, hi, attach)[0]
    return TwoLevelStatistic(fn, point, reps, f"internal_nc_{estimator}", discrete=estimator == "sign-change")


def per_resample_rows(at: str):
    """The slope and fixed-point path before the batched fits: ``ols_line`` / ``fixed_point_xy`` one
    resample at a time (``TwoLevelStatistic``), built with ``TwoLevelRowsStatistic``'s arguments."""
    from cape_hpc.analysis import ols_line
    from cape_hpc.analysis.fixedpoint import fixed_point_xy
    from cape_hpc.analysis.options import FixedPointOptions

    fpo = FixedPointOptions(at=at)

    def make(rows, x, point, reps, name, discrete=False):
        if name == "ladder_slope":
            def fn(vals, idx):
                return ols_line(x[idx], vals[idx])[0]
        else:
            def fn(vals, idx):
                return fixed_point_xy(x[idx], vals[idx], fpo).gamma_star
        return TwoLevelStatistic(fn, point, reps, name, discrete)
    return make


def nc_statistics(ins: list[ModelInput], opts: CrossModelOptions, make) -> list:
    """Every family's three N_c statistics built by ``make`` (the fused class or ``per_resample``)."""
    stats = []
    for f in sorted({mi.family for mi in ins}):
        members = sorted((mi for mi in ins if mi.family == f), key=lambda mi: mi.params)
        x = np.log10([mi.params for mi in members])
        reps = np.stack([model_replicates(mi.result, opts.n_resamples, opts.seed, opts.level)["final"]
                         for mi in members], axis=1)
        y = np.array([mi.result.layers[-1].coupling for mi in members])
        for est in opts.estimators:
            lo, hi = (x.min(), x.max()) if est == "quadratic" else (-np.inf, np.inf)
            stats.append(make(est, x, y, reps, lo, hi, opts.attach))
    return stats


def measure() -> list[str]:
    n_f, n_m, R = sizes()
    ins = inputs(n_f, n_m)
    opts = CrossModelOptions(n_resamples=R)
    fused = nc_statistics(ins, opts, families.TwoLevelNcStatistic)
    old = nc_statistics(ins, opts, per_resample)
    run_all = lambda stats: [bootstrap(s, opts) for s in stats]  # noqa: E731
    run_all(fused[:3]), run_all(old[:3])                              # compile the kernels first
    t_nc_new, t_nc_old = best(lambda: run_all(fused), 3), best(lambda: run_all(old), 2)

    def analysis(nc, rows):
        saved = families.TwoLevelNcStatistic, families.TwoLevelRowsStatistic
        families.TwoLevelNcStatistic, families.TwoLevelRowsStatistic = nc, rows
        try:
            return cross_model_analysis(ins, opts)
        finally:
            families.TwoLevelNcStatistic, families.TwoLevelRowsStatistic = saved
    now = (families.TwoLevelNcStatistic, families.TwoLevelRowsStatistic)
    t_all_new = best(lambda: analysis(*now), 2)
    t_rows_old = best(lambda: analysis(now[0], per_resample_rows(opts.at)), 2)
    t_all_old = best(lambda: analysis(per_resample, per_resample_rows(opts.at)), 2)
    n_boot = len(fused)
    return [f"{n_f} families x {n_m} models, {R} resamples, {n_boot} N_c bootstraps (numba threads: "
            f"{__import__('numba').get_num_threads()})",
            f"{'':34}{'fused':>10}{'per resample':>14}{'ratio':>8}",
            f"{'N_c bootstraps (3 estimators)':34}{t_nc_new:>9.3f}s{t_nc_old:>13.3f}s{t_nc_old / t_nc_new:>7.1f}x",
            f"{'cross_model_analysis (all)':34}{t_all_new:>9.3f}s{t_all_old:>13.3f}s{t_all_old / t_all_new:>7.1f}x",
            f"{'  slope, fixed point one at a time':34}{t_all_new:>9.3f}s{t_rows_old:>13.3f}s"
            f"{t_rows_old / t_all_new:>7.1f}x"]


def test_crossmodel_fused_nc(benchmark, request):
    lines = benchmark.pedantic(measure, rounds=1, iterations=1)
    for line in lines:
        request.config.cape_bench_lines.append((SUITE, line))


if __name__ == "__main__":
    print(SUITE)
    for line in measure():
        print(line)
