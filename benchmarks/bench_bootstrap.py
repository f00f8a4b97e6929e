"""Bootstrap benchmark: what `cape nc --estimator quadratic -n R` and `cape deff -n R` run, against a
numpy loop and ``scipy.stats.bootstrap`` doing the same bootstraps, measured in the same run.

Run:  .venv/bin/python -m pytest benchmarks/bench_bootstrap.py --benchmark-only -s
      (``make bench`` runs it with the other suites; the summary table prints at the end;
      ``benchmarks/bench_commands.py`` prints the same table as a script, with a new-process timing)

Engines compared, all in this one run:

* ``cape`` -- the functions the commands call, imported from the package and called as the command
  calls them: ``estimate_nc(df, NcOptions(estimator="quadratic", pooled=p, n_resamples=R))`` for
  p in (per family, pooled) -- the two scopes `cape nc` runs by default -- and
  ``effective_dimension(df, DeffOptions(n_resamples=R))``.  Both run the fused kernels
  (``cape_kernels.quadratic_nc_boot`` / ``participation_ratio_boot``: counter-based draws + one-pass
  sums, prange over resamples).  The table load is outside the timing.
* ``numpy loop`` -- the same bootstraps written by hand (``bench_commands.numpy_loop``): per scope the
  index matrix (vectorised numpy, the same streams) then, per resample, ``np.polyfit`` (N_c) or
  ``np.cov`` + ``np.linalg.eigvalsh`` (d_eff).  Timed on ``BASELINE_R`` resamples (best of 3, right
  after the engine) and scaled linearly to R; its values are checked against the kernels'.
* ``scipy`` -- ``scipy.stats.bootstrap(method="percentile", vectorized=False)`` per scope,
  unstratified (scipy has no stratified resampling), same statistic, timed on ``BASELINE_R`` and scaled.

Arithmetic per resample (n models in a scope, p = 5 scores; counted before measuring):
  d_eff: n draws + n * (p + p(p+1)/2) = 20 n adds of the per-model features + ~4 p^2 -> 20 n + 100 flop.
  N_c:   n draws + 8 n adds (t, t^2, t^3, t^4, y, t y, t^2 y, pad) + ~30 to solve -> 8 n + 30 flop.
Both are tiny, latency-bound work (a random row gather and a 64-bit hash per model), far from the
machine's ~95 GFLOP/s/thread dense-matmul ceiling; the achieved rate is printed.
"""
from __future__ import annotations

import os

import numba
import pytest

from bench_commands import best, check_numpy_loop_equals_kernels, numpy_loop, scipy_bootstrap, work

from cape_hpc.analysis.deff import DeffOptions, effective_dimension
from cape_hpc.analysis.nc import NcOptions, estimate_nc
from cape_hpc.io.scores import load_scores

BASELINE_R = int(os.environ.get("CAPE_BENCH_BASELINE_R", "500"))
SUITE = "bootstrap benchmark (what cape nc / cape deff run vs numpy loop vs scipy.stats.bootstrap)"
MACHINE_GFLOPS_PER_THREAD = 95.0   # float32 matmul, one thread (the machine's ceiling)
DF = load_scores()


def cape_nc_quadratic(R: int):
    """`cape nc --estimator quadratic -n R`: the per-family and the pooled NcResult."""
    return [estimate_nc(DF, NcOptions(estimator="quadratic", pooled=p, n_resamples=R)) for p in (False, True)]


def cape_deff(R: int):
    """`cape deff -n R`."""
    return [effective_dimension(DF, DeffOptions(n_resamples=R))]


def _nc_boots(results):
    return [e.bootstrap for r in results for e in r.estimates if e.bootstrap.n_resamples]


def _deff_boots(results):
    return [g.bootstrap for r in results for g in r.groups if g.bootstrap.n_resamples]


CASES = {
    "cape nc --estimator quadratic": {"run": cape_nc_quadratic, "boots": _nc_boots, "flop_per_model": 8,
                                      "flop_fixed": 30},
    "cape deff": {"run": cape_deff, "boots": _deff_boots, "flop_per_model": 20, "flop_fixed": 100},
}
_CHECKED: set[str] = set()


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("R", [10_000, 100_000])
def test_commands_bootstrap(benchmark, request, case, R):
    spec = CASES[case]
    jobs = work(case, DF)
    spec["run"](256)                                               # compile / load the kernels' cache
    res = benchmark.pedantic(spec["run"], args=(R,), rounds=7 if R <= 10_000 else 3, iterations=1,
                             warmup_rounds=1)
    boots = spec["boots"](res)
    assert len(boots) == len(jobs) and all(b.n_resamples == R for b in boots)
    assert sum(b.n_valid for b in boots) > 0.2 * R * len(boots)   # per-family quadratic fits are often invalid
    if case not in _CHECKED:                                       # the hand loop sees the same streams
        check_numpy_loop_equals_kernels(case, DF, numpy_loop(jobs, BASELINE_R), BASELINE_R)
        _CHECKED.add(case)

    t_cape = benchmark.stats.stats.min
    t_np = best(lambda: numpy_loop(jobs, BASELINE_R), 3) * R / BASELINE_R
    t_sp = best(lambda: scipy_bootstrap(jobs, BASELINE_R), 3) * R / BASELINE_R
    threads = numba.get_num_threads()
    models = sum(n for n, _, _ in jobs)
    flop = R * (spec["flop_per_model"] * models + spec["flop_fixed"] * len(jobs))
    gflops = flop / t_cape / 1e9
    info = {"command": f"{case} -n {R}", "n_resamples": R, "bootstraps": len(jobs), "threads": threads,
            "cape_s_min": t_cape, "cape_s_median": benchmark.stats.stats.median,
            "numpy_loop_s_scaled": t_np, "scipy_s_scaled": t_sp, "baselines_timed_on": BASELINE_R,
            "speedup_vs_numpy_loop": t_np / t_cape, "speedup_vs_scipy": t_sp / t_cape,
            "achieved_gflops": gflops, "fraction_of_machine_peak": gflops / (MACHINE_GFLOPS_PER_THREAD * threads)}
    benchmark.extra_info.update(info)

    lines = request.config.__dict__.setdefault("cape_bench_lines", [])
    if not any(s == SUITE for s, _ in lines):
        lines.append((SUITE, f"table: {DF.attrs.get('path', 'data/base_models.csv')}; numba threads: {threads}; "
                             f"baselines timed on {BASELINE_R} resamples per bootstrap (best of 3) and scaled "
                             f"linearly; the cape time is the library call the command makes (table loaded)"))
        lines.append((SUITE, f"{'command':<38} {'boots':>5} {'cape s':>8} {'numpy s':>9} {'scipy s':>9} "
                             f"{'x numpy':>8} {'x scipy':>8} {'GFLOP/s':>8} {'% peak':>7}"))
    lines.append((SUITE, f"{info['command']:<38} {len(jobs):>5} {t_cape:>8.3f} {t_np:>9.1f} {t_sp:>9.1f} "
                         f"{t_np / t_cape:>8.0f} {t_sp / t_cape:>8.0f} {gflops:>8.2f} "
                         f"{100 * info['fraction_of_machine_peak']:>7.1f}"))
