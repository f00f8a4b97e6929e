"""cape_hpc.stats.bootstrap vs scipy.stats.bootstrap, the numpy oracle, and invariants."""
import math

import numba
import numpy as np
import pytest
from scipy import stats

from cape_hpc.analysis.nc import QuadraticNcStatistic
from cape_hpc.errors import DataError, OptionError
from cape_hpc.schema import BootstrapSummary, ConfidenceInterval, to_jsonable
from cape_hpc.stats import (
    BatchStatistic,
    BootstrapOptions,
    ParticipationRatioStatistic,
    bca_interval,
    bca_parameters,
    bootstrap,
    min_valid,
    percentile_interval,
    summarize,
)
from roundtrip import assert_roundtrip
from cape_kernels.reference_resample import participation_ratio_eig, quadratic_vertex_ref

RNG = np.random.default_rng(20261124)
X40 = RNG.normal(size=(40, 5)) @ RNG.normal(size=(5, 5)) + 50
SKEW = RNG.exponential(size=60) ** 1.5          # a skewed sample: BCa differs from percentile


def _deff_eig(i):
    return participation_ratio_eig(X40[i])


def _close_ci(ours, theirs, width, frac):
    """Monte Carlo tolerance: each end within ``frac`` of the interval's width."""
    assert abs(ours.low - theirs[0]) < frac * width and abs(ours.high - theirs[1]) < frac * width


def test_percentile_matches_scipy_for_a_callable():
    R = 4000
    ours = bootstrap(lambda i: SKEW[i].mean(), BootstrapOptions(n_resamples=R, seed=1, levels=(0.95, 0.68)),
                     n=len(SKEW))
    for lv in (0.95, 0.68):
        ref = stats.bootstrap((SKEW,), np.mean, n_resamples=R, method="percentile", confidence_level=lv,
                              rng=np.random.default_rng(2)).confidence_interval
        _close_ci(ours.interval(lv), ref, ref.high - ref.low, 0.08)
    assert ours.estimate == pytest.approx(SKEW.mean(), rel=1e-15)
    assert ours.n_valid == R and ours.n_invalid == 0 and not ours.stratified


def test_percentile_and_bca_match_scipy_for_participation_ratio():
    R = 3000
    stat = ParticipationRatioStatistic(X40)
    idx = np.arange(40)
    for method, sp in (("percentile", "percentile"), ("bca", "BCa")):
        ours = bootstrap(stat, BootstrapOptions(n_resamples=R, seed=3, ci_method=method, levels=(0.9,)))
        ref = stats.bootstrap((idx,), _deff_eig, vectorized=False, n_resamples=R, method=sp,
                              confidence_level=0.9, rng=np.random.default_rng(4)).confidence_interval
        _close_ci(ours.interval(0.9), ref, ref.high - ref.low, 0.12)
    assert ours.estimate == pytest.approx(participation_ratio_eig(X40), rel=1e-12)


def test_bca_matches_scipy_on_a_skewed_statistic():
    R = 5000
    ours = bootstrap(lambda i: SKEW[i].mean(), BootstrapOptions(n_resamples=R, seed=5, ci_method="bca", levels=(0.95,)),
                     n=len(SKEW))
    ref = stats.bootstrap((SKEW,), np.mean, n_resamples=R, method="BCa", confidence_level=0.95,
                          rng=np.random.default_rng(6)).confidence_interval
    _close_ci(ours.interval(0.95), ref, ref.high - ref.low, 0.08)
    # the jackknife acceleration of the mean has a closed form: skewness / (6 sqrt(n))
    d = SKEW - SKEW.mean()
    a_exact = np.sum(d ** 3) / (6 * np.sum(d ** 2) ** 1.5)
    assert ours.acceleration == pytest.approx(a_exact, rel=1e-10)
    pct = bootstrap(lambda i: SKEW[i].mean(), BootstrapOptions(n_resamples=R, seed=5, levels=(0.95,)), n=len(SKEW))
    assert ours.interval(0.95) != pct.interval(0.95)           # the correction moved the interval
    np.testing.assert_array_equal(ours.samples, pct.samples)


def test_batch_statistic_equals_callable_oracle_on_same_streams():
    fam = np.repeat(np.arange(10), 4)
    a = bootstrap(ParticipationRatioStatistic(X40, corr=True), BootstrapOptions(n_resamples=700, seed=9), strata=fam)
    b = bootstrap(lambda i: participation_ratio_eig(X40[i], corr=True), BootstrapOptions(n_resamples=700, seed=9),
                  n=40, strata=fam)
    np.testing.assert_allclose(a.samples, b.samples, rtol=1e-12)
    assert a.stratified and a.n_strata == 10


def test_identical_across_threads_and_chunks():
    fam = np.repeat(np.arange(10), 4)
    stat = ParticipationRatioStatistic(X40)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = bootstrap(stat, BootstrapOptions(n_resamples=5000, seed=42, ci_method="bca"), strata=fam, chunk=4096)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = bootstrap(stat, BootstrapOptions(n_resamples=5000, seed=42, ci_method="bca"), strata=fam, chunk=333)
    finally:
        numba.set_num_threads(old)
    assert one.samples.tobytes() == two.samples.tobytes()
    assert one.intervals == two.intervals and one.median == two.median


def test_quadratic_invalid_fits_are_dropped_and_counted():
    rng = np.random.default_rng(8)
    x = np.log10(np.repeat([[1e8, 3e8, 1e9, 3e9, 1e10]], 4, axis=0).ravel() * rng.uniform(0.8, 1.2, 20))
    y = 0.3 * (x - 9.0) ** 2 + rng.normal(size=20) * 0.5
    fam = np.repeat(np.arange(4), 5)
    stat = QuadraticNcStatistic(x, y)
    res = bootstrap(stat, BootstrapOptions(n_resamples=2000, seed=0, ci_method="bca"), strata=fam)
    assert 0 < res.n_valid < 2000 and res.n_invalid == 2000 - res.n_valid
    assert np.isnan(res.samples).sum() == res.n_invalid
    valid = res.samples[np.isfinite(res.samples)]
    assert np.all((valid >= x.min()) & (valid <= x.max()))
    assert res.median == np.median(valid)
    assert res.estimate == pytest.approx(quadratic_vertex_ref(x, y, x.min(), x.max()), rel=1e-12)
    # the same through a polyfit callable: same streams, same validity
    cb = bootstrap(lambda i: quadratic_vertex_ref(x[i], y[i], x.min(), x.max()),
                   BootstrapOptions(n_resamples=2000, seed=0), n=20, strata=fam)
    np.testing.assert_allclose(cb.samples, res.samples, rtol=1e-12)


def test_percentile_definition_and_zero_variance_strata():
    # every unit its own stratum: each resample is the original sample
    stat = ParticipationRatioStatistic(X40)
    res = bootstrap(stat, BootstrapOptions(n_resamples=50, seed=1), strata=np.arange(40))
    np.testing.assert_allclose(res.samples, res.estimate, rtol=1e-13)
    res = bootstrap(stat, BootstrapOptions(n_resamples=999, seed=1, levels=(0.9,)))
    v = res.samples
    assert (res.interval(0.9).low, res.interval(0.9).high) == tuple(np.quantile(v, [0.05, 0.95]))


def test_bca_undefined_when_all_samples_on_one_side():
    class Biased(BatchStatistic):
        n = 10
        name = "biased"

        def full(self):
            return 0.0

        def batch(self, idx):
            return 1.0 + idx.sum(axis=1) / 1000.0

    res = bootstrap(Biased(), BootstrapOptions(n_resamples=100, ci_method="bca"))
    assert math.isnan(res.interval(0.95).low) and "one side" in res.note


def test_options_are_checked_by_bootstrap_options_and_data_by_data_error():
    stat = ParticipationRatioStatistic(X40)
    for kw, flag in [({"n_resamples": 0}, "--n-resamples"), ({"seed": -1}, "--seed"), ({"seed": 1.5}, "--seed"),
                     ({"seed": 2 ** 64}, "--seed"), ({"levels": (1.2,)}, "--levels"),
                     ({"ci_method": "basic"}, "--ci-method")]:
        with pytest.raises(OptionError, match=flag):
            bootstrap(stat, BootstrapOptions(**kw))
    with pytest.raises(OptionError, match="BootstrapOptions"):
        bootstrap(stat, {"n_resamples": 10})
    with pytest.raises(DataError, match="one label per unit"):
        bootstrap(stat, strata=np.arange(3))
    with pytest.raises(DataError, match="no label"):
        bootstrap(stat, strata=np.array(["a"] * 39 + [None], dtype=object))
    with pytest.raises(DataError, match=">= 2 units"):
        bootstrap(lambda i: 0.0, n=1)
    with pytest.raises(DataError, match="has 40 units"):
        bootstrap(stat, n=39)
    with pytest.raises(OptionError, match="n is required"):
        bootstrap(lambda i: 0.0)
    # stratify=False ignores the strata: the plain bootstrap's streams
    plain = bootstrap(stat, BootstrapOptions(n_resamples=50))
    unstrat = bootstrap(stat, BootstrapOptions(n_resamples=50, stratify=False), strata=np.repeat(np.arange(10), 4))
    assert not unstrat.stratified and unstrat.samples.tobytes() == plain.samples.tobytes()


def test_result_round_trips_with_provenance(tmp_path):
    res = bootstrap(ParticipationRatioStatistic(X40), BootstrapOptions(n_resamples=100, seed=7),
                    strata=np.repeat(np.arange(10), 4))
    assert [ci.level for ci in res.intervals] == [0.95, 0.68]
    assert all(isinstance(ci, ConfidenceInterval) for ci in res.intervals)
    j = to_jsonable(res)
    assert j["seed"] == 7 and j["n_resamples"] == 100
    assert j["intervals"][0]["low"] <= j["intervals"][0]["high"] and j["intervals"][0]["level"] == 0.95
    assert j["provenance"]["method"] == "bootstrap-percentile"
    assert j["provenance"]["options"]["stratified"] is True
    back = assert_roundtrip(res, tmp_path)
    assert back.samples.tobytes() == res.samples.tobytes()
    with pytest.raises(AttributeError):
        res.ci = {}                                   # no undeclared attribute


def test_summarize_keeps_the_numbers_and_flags_degenerate_bootstraps():
    res = bootstrap(lambda i: SKEW[i].mean(), BootstrapOptions(n_resamples=400, seed=1, levels=(0.9, 0.5)), n=len(SKEW))
    s = summarize(res)
    assert isinstance(s, BootstrapSummary) and not s.degenerate and s.note == ""
    assert (s.estimate, s.median, s.n_valid, s.n_resamples, s.seed) == (res.estimate, res.median, 400, 400, 1)
    lo, hi = np.quantile(res.samples, [0.05, 0.95])
    assert (s.interval(0.9).low, s.interval(0.9).high) == (lo, hi)
    assert s.interval(0.5) == res.intervals[1] and math.isnan(s.interval(0.95).low)
    # the stated minimum of valid resamples: max(100, 1% of R)
    assert (min_valid(50), min_valid(10_000), min_valid(100_000)) == (100, 100, 1000)
    few = summarize(bootstrap(lambda i: SKEW[i].mean(), BootstrapOptions(n_resamples=50, seed=1), n=len(SKEW)))
    assert few.degenerate and "50 valid resamples < minimum 100" in few.note
    # about 1 in 4 resamples valid: ~2,000 of 8,000 clear the minimum of 100
    gated = bootstrap(lambda i: SKEW[i].mean() if i[0] % 4 == 0 else np.nan, BootstrapOptions(n_resamples=8000, seed=2),
                      n=len(SKEW))
    assert summarize(gated).degenerate is False and 1500 < gated.n_valid < 2500
    # zero width: every resample the same value
    flat = summarize(bootstrap(lambda i: 1.0, BootstrapOptions(n_resamples=200), n=10))
    assert flat.degenerate and "zero-width" in flat.note
    # nothing valid: no interval
    none = summarize(bootstrap(lambda i: np.nan, BootstrapOptions(n_resamples=200), n=10))
    assert none.degenerate and "no valid resample" in none.note and "no interval defined" in none.note
    assert math.isnan(none.median) and none.n_valid == 0


def test_percentile_intervals_of_columns_equal_numpy_quantiles_of_each_valid_column():
    """Columns without NaN (one quantile call), with some NaN, all NaN, and no rows at all: each
    equals numpy's quantiles (linear) of that column's finite values."""
    from cape_hpc.stats.intervals import percentile_intervals

    rng = np.random.default_rng(3)
    X = rng.normal(size=(57, 6))
    X[::3, 1] = np.nan
    X[5, 2] = np.inf
    X[:, 4] = np.nan
    got = percentile_intervals(X, 0.8)
    for j in range(6):
        v = X[np.isfinite(X[:, j]), j]
        if v.size == 0:
            assert not got[j].defined
            continue
        lo, hi = np.quantile(v, [(1 - 0.8) / 2, (1 + 0.8) / 2])
        assert (got[j].low, got[j].high, got[j].level) == (lo, hi, 0.8)
    assert [ci.defined for ci in percentile_intervals(np.empty((0, 3)), 0.9)] == [False] * 3


def test_interval_functions_return_confidence_intervals():
    v = np.arange(101.0)
    ci = percentile_interval(v, 0.9)
    assert isinstance(ci, ConfidenceInterval) and ci.level == 0.9
    assert (ci.low, ci.high) == pytest.approx((5.0, 95.0), rel=1e-14)     # quantiles 0.05, 0.95 of 0..100
    assert not percentile_interval(np.array([]), 0.9).defined
    # BCa with z0 = 0 and a = 0 (symmetric sample, estimate at the median) is the percentile interval
    jack = np.ones(7)
    b = bca_interval(v, 50.0, jack, 0.9)
    assert b.low == pytest.approx(5.0, rel=1e-12) and b.high == pytest.approx(95.0, rel=1e-12)
    assert bca_parameters(v, 50.0, jack) == (0.0, 0.0)
    assert not bca_interval(v, -1.0, jack, 0.9).defined       # every value above the estimate
    with pytest.raises(OptionError, match="level"):
        percentile_interval(v, 1.5)
