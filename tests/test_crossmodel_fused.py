"""`cape crossmodel`'s N_c runs on the fused N_c statistics of `cape nc` (``TwoLevelNcStatistic``, one
kernel call per chunk of resamples) and gives the numbers of the per-resample path it replaced
(``TwoLevelStatistic`` with one kernel call per resample, kept here as the reference), for every
estimator, with and without block statistics, with invalid resamples and with BCa."""
from __future__ import annotations

import math

import numpy as np
import pytest

from crossmodel_fixture import synthetic_internals

from cape_hpc.crossmodel import families
from cape_hpc.crossmodel.families import TwoLevelNcStatistic, TwoLevelStatistic, cross_model_analysis
from cape_hpc.crossmodel.options import CrossModelOptions
from cape_hpc.crossmodel.table import ModelInput
from cape_hpc.stats import bootstrap
from cape_hpc.stats.options import BootstrapOptions


def per_resample_nc(estimator, x, point, reps, lo, hi, attach):
    """The path before the fused statistics: one kernel call per resample (the reference).  One
    change: a NaN of a model the resample did not draw is replaced (the quadratic kernel refused it,
    so such a ladder stopped `cape crossmodel` with "x and y must be finite")."""
    from cape_kernels import gamma_nc_batch, quadratic_nc_batch

    fam = np.zeros(x.size, dtype=np.int64)
    if estimator == "quadratic":
        fn = lambda vals, idx: quadratic_nc_batch(x, np.nan_to_num(vals, nan=0.0), idx[None, :], lo,  # noqa: E731
                                                  hi)[0]
    else:
        fn = lambda vals, idx: gamma_nc_batch(estimator, fam, x, x, vals, idx[None, :], 0.0, lo, hi,  # noqa: E731
                                              attach)[0]
    return TwoLevelStatistic(fn, point, reps, f"internal_nc_{estimator}", discrete=estimator == "sign-change")


def _inputs(blocks=True):
    """Three families: a dip (every estimator valid), a rise, and a short noisy ladder."""
    ladders = {"Dip": ([1e8, 3e8, 1e9, 3e9, 1e10], [0.6, 0.3, 0.25, 0.5, 0.8]),
               "Rise": ([2e8, 7e8, 2e9, 7e9], [0.1, 0.2, 0.45, 0.5]),
               "Flat": ([1e8, 1e9, 1e10], [0.4, 0.1, 0.45])}
    out = []
    for f, (fam, (params, finals)) in enumerate(ladders.items()):
        for i, (p, c) in enumerate(zip(params, finals)):
            res, _ = synthetic_internals(f"{fam}{i}", [0.2, c], seed=10 * f + i, blocks=blocks, noise=0.3)
            out.append(ModelInput(res, f"mem:/internals/{fam}{i}", fam, p, "spec"))
    return out


def _reference(monkeypatch, inputs, opts):
    with monkeypatch.context() as m:
        m.setattr(families, "TwoLevelNcStatistic", per_resample_nc)
        return cross_model_analysis(inputs, opts)


@pytest.mark.parametrize("blocks", [True, False])
@pytest.mark.parametrize("ci_method", ["percentile", "bca"])
def test_fused_nc_equals_the_per_resample_path(monkeypatch, blocks, ci_method):
    inputs = _inputs(blocks)
    opts = CrossModelOptions(n_resamples=600, seed=11, ci_method=ci_method, levels=(0.95, 0.68))
    ref = _reference(monkeypatch, inputs, opts)
    new = cross_model_analysis(inputs, opts)
    assert len(new.nc) == len(ref.nc) == 9
    checked_valid = 0
    for a, b in zip(new.nc, ref.nc):
        assert (a.family, a.estimator) == (b.family, b.estimator)
        sa, sb = a.bootstrap, b.bootstrap
        assert sa.n_valid == sb.n_valid and sa.n_resamples == sb.n_resamples == 600
        assert sa.note == sb.note and sa.degenerate == sb.degenerate
        for u, v in [(sa.estimate, sb.estimate), (sa.median, sb.median)] + \
                [(ca.low, cb.low) for ca, cb in zip(sa.intervals, sb.intervals)] + \
                [(ca.high, cb.high) for ca, cb in zip(sa.intervals, sb.intervals)]:
            assert (math.isnan(u) and math.isnan(v)) or u == v              # bit for bit
        assert (a.log10_nc == b.log10_nc) or (math.isnan(a.log10_nc) and math.isnan(b.log10_nc))
        checked_valid += sa.n_valid > 0
    assert checked_valid >= 6            # the comparison covers real intervals, not only empty ones
    # the rest of the result does not move
    assert [l.slope_boot for l in new.ladders] == [l.slope_boot for l in ref.ladders]
    assert [f.bootstrap for f in new.fixed_points] == [f.bootstrap for f in ref.fixed_points]


@pytest.mark.parametrize("estimator", ["sign-change", "gamma-fit", "quadratic"])
def test_every_resample_value_with_nan_replicates(estimator):
    """Resample by resample, including block resamples where a model's value is NaN (that model drawn:
    invalid; not drawn: no effect) and chunks that do not divide the resamples."""
    rng = np.random.default_rng(5)
    n, R = 6, 1000
    x = np.log10(np.array([1e8, 2e8, 5e8, 1e9, 3e9, 1e10]))
    point = np.array([0.5, 0.3, 0.2, 0.35, 0.6, 0.7])
    reps = point + 0.1 * rng.standard_normal((R, n))
    reps[rng.random((R, n)) < 0.05] = np.nan
    lo, hi = (x.min(), x.max()) if estimator == "quadratic" else (-math.inf, math.inf)
    fused = TwoLevelNcStatistic(estimator, x, point, reps, lo, hi, "midpoint")
    ref = per_resample_nc(estimator, x, point, reps, lo, hi, "midpoint")
    opts = BootstrapOptions(n_resamples=R, seed=3)
    a = bootstrap(fused, opts, chunk=333).samples
    b = bootstrap(ref, opts).samples
    assert np.isnan(a).sum() == np.isnan(b).sum() and 0 < np.isnan(b).sum() < R
    ok = ~np.isnan(b)
    assert np.array_equal(np.isnan(a), ~ok)
    assert np.array_equal(a[ok], b[ok])
    assert fused.full() == ref.full()
    assert np.array_equal(np.isnan(fused.jackknife()), np.isnan(ref.jackknife()))


def _ladder_with_ties(n: int, rng):
    """log10 N of n models, two of them the same size (a zero-width interval the fits must drop)."""
    x = np.sort(np.log10(rng.uniform(1e8, 1e11, n)))
    x[n // 2] = x[n // 2 - 1]
    return x


@pytest.mark.parametrize("n", [6, 13])                     # 13: more than 8 intervals (numpy's unrolled sums)
@pytest.mark.parametrize("which", ["slope", "fixed_point_mid", "fixed_point_left"])
def test_batched_slope_and_fixed_point_equal_the_per_resample_fits(which, n):
    """``TwoLevelRowsStatistic`` over ``ols_rows`` / ``fixed_points`` gives, resample by resample, the
    values of ``TwoLevelStatistic`` over ``ols_line`` / ``fixed_point_xy`` one resample at a time: bit
    for bit, with NaN block replicates, tied sizes and chunks that do not divide the resamples."""
    from cape_hpc.analysis import ols_line, ols_rows
    from cape_hpc.analysis.fixedpoint import fixed_point_xy, fixed_points
    from cape_hpc.analysis.options import FixedPointOptions
    from cape_hpc.crossmodel.families import TwoLevelRowsStatistic

    rng = np.random.default_rng(n)
    R = 900
    x = _ladder_with_ties(n, rng)
    point = 0.4 + 0.2 * np.sin(3 * x) + 0.05 * rng.standard_normal(n)
    reps = point + 0.1 * rng.standard_normal((R, n))
    reps[rng.random((R, n)) < 0.03] = np.nan
    if which == "slope":
        one = lambda vals, idx: ols_line(x[idx], vals[idx])[0]                  # noqa: E731
        rows = lambda xs, ys: ols_rows(xs, ys)[0]                               # noqa: E731
    else:
        at = which.rsplit("_", 1)[1]
        one = lambda vals, idx: fixed_point_xy(x[idx], vals[idx], FixedPointOptions(at=at)).gamma_star  # noqa: E731
        rows = lambda xs, ys: fixed_points(xs, ys, at)                          # noqa: E731
    ref = TwoLevelStatistic(one, point, reps, which)
    new = TwoLevelRowsStatistic(rows, x, point, reps, which)
    opts = BootstrapOptions(n_resamples=R, seed=7)
    a = bootstrap(new, opts, chunk=250).samples
    b = bootstrap(ref, opts).samples
    ok = ~np.isnan(b)
    assert np.array_equal(np.isnan(a), ~ok) and 0 < (~ok).sum() < R / 2
    assert np.array_equal(a[ok], b[ok])
    assert new.full() == ref.full() and math.isfinite(ref.full())
    assert np.array_equal(new.jackknife(), ref.jackknife(), equal_nan=True)
    # the models-only level (no block statistics: reps None)
    new_m, ref_m = TwoLevelRowsStatistic(rows, x, point, None, which), TwoLevelStatistic(one, point, None, which)
    assert np.array_equal(bootstrap(new_m, opts, chunk=333).samples, bootstrap(ref_m, opts).samples, equal_nan=True)


def test_ols_rows_equal_scipy_linregress_and_refuse_a_constant_x():
    from scipy.stats import linregress

    from cape_hpc.analysis import ols_rows

    rng = np.random.default_rng(1)
    x = rng.uniform(8, 11, (50, 9))
    y = 0.3 * x + rng.standard_normal((50, 9))
    x[3] = 9.5                                                  # constant x: no line
    slope, icpt = ols_rows(x, y)
    for i in range(50):
        if i == 3:
            assert math.isnan(slope[i]) and math.isnan(icpt[i])
            continue
        ref = linregress(x[i], y[i])
        assert slope[i] == pytest.approx(ref.slope, rel=1e-12) and icpt[i] == pytest.approx(ref.intercept, rel=1e-12)
    assert np.isnan(ols_rows(x[:, :1], y[:, :1])[0]).all()      # one point per row
