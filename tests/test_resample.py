"""cape_kernels.resample vs the numpy oracle (kernels/cape_kernels/reference_resample.py) and textbook formulas."""
import numba
import numpy as np
import pytest

from cape_kernels import participation_ratio_batch, quadratic_nc_batch, resample_indices
from cape_kernels.reference_resample import (
    participation_ratio_batch_ref,
    participation_ratio_eig,
    quadratic_nc_batch_ref,
    resample_indices_ref,
)

STRATA = [
    None,
    np.array([0]),
    np.array([3, 3, 1, 3, 7, 1, 1, 3, 9]),                  # singleton stratum, unsorted labels
    np.array(list("abcab" "ccaab" "c")),                    # string labels
    np.repeat(np.arange(16), 4)[:63],                       # 16 families, one of size 3
]


def _n(strata, default=11):
    return default if strata is None else len(strata)


@pytest.mark.parametrize("strata", STRATA, ids=lambda s: "plain" if s is None else f"n{len(s)}")
@pytest.mark.parametrize("R,seed", [(1, 0), (17, 12345), (513, 2**64 - 1)])
def test_indices_match_oracle_exactly(strata, R, seed):
    n = _n(strata)
    a = resample_indices(strata, R, seed, n=n)
    b = resample_indices_ref(strata, R, seed, n=n)
    assert a.dtype == np.int64 and a.shape == (R, n)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("strata", STRATA[2:], ids=lambda s: f"n{len(s)}")
def test_stratification_never_mixes_and_keeps_counts(strata):
    a = resample_indices(strata, 300, 7)
    # every position is filled by a member of its own stratum ...
    assert np.all(strata[a] == strata[None, :])
    # ... so every stratum keeps its size in every resample
    labels, counts = np.unique(strata, return_counts=True)
    for lab, c in zip(labels, counts):
        assert np.all((strata[a] == lab).sum(axis=1) == c)
    # and all members of a stratum of size >= 2 get drawn
    for lab in labels:
        members = np.flatnonzero(strata == lab)
        drawn = np.unique(a[:, members])
        np.testing.assert_array_equal(drawn, members)


def test_draws_are_uniform():
    # 200,000 draws over 13 members: chi-square well inside its 1e-4 quantile
    from scipy.stats import chi2

    a = resample_indices(None, 20000, 99, n=13)
    counts = np.bincount(a.ravel(), minlength=13)
    e = a.size / 13
    stat = np.sum((counts - e) ** 2 / e)
    assert stat < chi2.ppf(1 - 1e-4, 12)
    # different seeds and different resamples give different rows
    assert not np.array_equal(a, resample_indices(None, 20000, 100, n=13))
    assert len({tuple(r) for r in a[:100]}) == 100


def test_chunking_does_not_change_rows():
    strata = STRATA[4]
    whole = resample_indices(strata, 1000, 5)
    parts = np.concatenate([resample_indices(strata, c, 5, start=s)
                            for s, c in [(0, 1), (1, 400), (401, 599)]])
    np.testing.assert_array_equal(whole, parts)


def test_one_and_two_threads_identical():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(63, 5))
    x, y = rng.uniform(8, 11, 63), rng.normal(size=63)
    old = numba.get_num_threads()
    out = []
    try:
        for t in (1, 2):
            numba.set_num_threads(t)
            idx = resample_indices(STRATA[4], 5000, 2024)
            out.append((idx, participation_ratio_batch(X, idx), participation_ratio_batch(X, idx, corr=True),
                        quadratic_nc_batch(x, y, idx, 8, 11)))
    finally:
        numba.set_num_threads(old)
    for a, b in zip(*out):
        assert a.tobytes() == b.tobytes()


def test_bad_arguments():
    with pytest.raises(ValueError, match="n="):
        resample_indices(None, 3, 0)
    with pytest.raises(ValueError, match="seed"):
        resample_indices(None, 3, -1, n=4)
    with pytest.raises(ValueError, match="seed"):
        resample_indices(None, 3, 2**64, n=4)
    with pytest.raises(ValueError, match="idx"):
        participation_ratio_batch(np.ones((4, 2)), np.array([[0, 4]]))


# ---------------------------------------------------------------------------------- d_eff
@pytest.mark.parametrize("n,p", [(7, 3), (37, 5), (63, 5), (9, 1), (5, 8)])
@pytest.mark.parametrize("corr", [False, True])
def test_participation_ratio_matches_oracle(n, p, corr):
    rng = np.random.default_rng(n * 10 + p)
    X = rng.normal(size=(n, p)) * rng.uniform(0.5, 20, p) + rng.uniform(-50, 80, p)
    idx = resample_indices(None, 300, n, n=n)
    got = participation_ratio_batch(X, idx, corr=corr)
    ref = participation_ratio_batch_ref(X, idx, corr=corr)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    if p == 1 and not corr:
        np.testing.assert_array_equal(got[np.isfinite(got)], 1.0)


def test_participation_ratio_equals_eigenvalue_formula():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 5)) @ rng.normal(size=(5, 5)) + 50
    idx = np.vstack([np.arange(40)[None, :], resample_indices(None, 50, 1, n=40)])
    for corr in (False, True):
        got = participation_ratio_batch(X, idx, corr=corr)
        eig = np.array([participation_ratio_eig(X[r], corr) for r in idx])
        np.testing.assert_allclose(got, eig, rtol=1e-12)
    # jackknife-width rows (m = n - 1) work too
    loo = np.stack([np.delete(np.arange(40), i) for i in range(40)])
    np.testing.assert_allclose(participation_ratio_batch(X, loo),
                               [participation_ratio_eig(X[r]) for r in loo], rtol=1e-12)


def test_participation_ratio_degenerate_is_nan():
    X = np.column_stack([np.arange(6.0), np.full(6, 2.0)])
    idx = np.array([[0, 1, 2, 3, 4, 5], [2, 2, 2, 2, 2, 2]])
    got = participation_ratio_batch(X, idx)
    assert got[0] == pytest.approx(1.0, rel=1e-14) and np.isnan(got[1])   # second: C == 0
    assert np.all(np.isnan(participation_ratio_batch(X, idx, corr=True)))  # constant column


# ---------------------------------------------------------------------------------- quadratic N_c
@pytest.mark.parametrize("n", [5, 8, 37, 63])
def test_quadratic_matches_oracle(n):
    rng = np.random.default_rng(n)
    x = rng.uniform(7.8, 11.2, n)
    y = 3.0 * (x - 9.4) ** 2 + 40 + rng.normal(size=n) * 1.5
    idx = resample_indices(None, 400, n, n=n)
    got = quadratic_nc_batch(x, y, idx, 8.0, 11.0)
    ref = quadratic_nc_batch_ref(x, y, idx, 8.0, 11.0)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert np.isfinite(got).sum() > 0
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_quadratic_equals_plain_polyfit_vertex():
    rng = np.random.default_rng(11)
    x = rng.uniform(8, 11, 30)
    y = 2.0 * x ** 2 - 38.0 * x + 5 + rng.normal(size=30) * 0.3   # vertex at 9.5
    idx = np.vstack([np.arange(30)[None, :], resample_indices(None, 100, 3, n=30)])
    got = quadratic_nc_batch(x, y, idx)
    for r, g in zip(idx, got):
        a, b, _ = np.polyfit(x[r], y[r], 2)      # uncentred, as a user would write it
        assert g == pytest.approx(-b / (2 * a), rel=1e-9)
    assert got[0] == pytest.approx(9.5, abs=0.1)


def test_quadratic_invalid_fits_are_nan():
    x = np.array([8.0, 8.5, 9.0, 9.5, 10.0, 10.5])
    concave = -(x - 9.2) ** 2
    assert np.isnan(quadratic_nc_batch(x, concave, np.arange(6)[None, :]))[0]        # a < 0
    convex = (x - 9.2) ** 2
    assert quadratic_nc_batch(x, convex, np.arange(6)[None, :])[0] == pytest.approx(9.2, rel=1e-12)
    assert np.isnan(quadratic_nc_batch(x, convex, np.arange(6)[None, :], 9.3, 11))[0]  # outside window
    two_x = np.array([[0, 0, 1, 1, 0, 1], [3, 3, 3, 3, 3, 3]])                        # < 3 distinct x
    assert np.all(np.isnan(quadratic_nc_batch(x, convex, two_x)))
    assert np.all(np.isnan(quadratic_nc_batch_ref(x, convex, two_x)))


# ---------------------------------------------------------------------------------- fused kernels
@pytest.mark.parametrize("strata", [None, STRATA[4]], ids=["plain", "strat"])
def test_fused_kernels_bit_identical_to_materialised(strata):
    from cape_kernels import participation_ratio_boot, quadratic_nc_boot

    rng = np.random.default_rng(5)
    X = rng.normal(size=(63, 5)) * 10 + 50
    x, y = rng.uniform(8, 11, 63), rng.normal(size=63)
    idx = resample_indices(strata, 3000, 77, n=63, start=123)
    for corr in (False, True):
        a = participation_ratio_boot(X, strata, 3000, 77, corr=corr, start=123)
        assert a.tobytes() == participation_ratio_batch(X, idx, corr=corr).tobytes()
    a = quadratic_nc_boot(x, y, strata, 3000, 77, 8.5, 10.5, start=123)
    assert a.tobytes() == quadratic_nc_batch(x, y, idx, 8.5, 10.5).tobytes()


def test_serial_and_parallel_paths_agree_bit_for_bit():
    # small calls run a serial twin of each kernel; a row must give the same bits either way
    from cape_kernels import participation_ratio_boot, quadratic_nc_boot
    from cape_kernels.resample import SERIAL_WORK

    rng = np.random.default_rng(6)
    X = rng.normal(size=(63, 5)) * 10 + 50
    x, y = rng.uniform(8, 11, 63), rng.normal(size=63)
    big = SERIAL_WORK // 63 + 10                      # parallel
    small = 7                                         # serial
    strata = STRATA[4]
    np.testing.assert_array_equal(resample_indices(strata, big, 3)[:small], resample_indices(strata, small, 3))
    for corr in (False, True):
        a = participation_ratio_boot(X, strata, big, 3, corr=corr)
        b = participation_ratio_boot(X, strata, small, 3, corr=corr)
        assert a[:small].tobytes() == b.tobytes()
        idx = resample_indices(strata, big, 3)
        assert participation_ratio_batch(X, idx, corr)[:small].tobytes() == \
            participation_ratio_batch(X, idx[:small], corr).tobytes()
    a = quadratic_nc_boot(x, y, strata, big, 3, 8.5, 10.5)
    assert a[:small].tobytes() == quadratic_nc_boot(x, y, strata, small, 3, 8.5, 10.5).tobytes()
    idx = resample_indices(strata, big, 3)
    assert quadratic_nc_batch(x, y, idx, 8.5, 10.5)[:small].tobytes() == \
        quadratic_nc_batch(x, y, idx[:small], 8.5, 10.5).tobytes()


# ---------------------------------------------------------------------------------- participation ratio of one matrix
@pytest.mark.parametrize("p", [1, 2, 5, 17])
def test_participation_ratio_of_a_matrix_equals_eigenvalues(p):
    from cape_kernels import participation_ratio

    rng = np.random.default_rng(p)
    X = rng.normal(size=(p + 9, p)) @ rng.normal(size=(p, p))
    C = np.cov(X, rowvar=False, ddof=1).reshape(p, p)
    lam = np.linalg.eigvalsh(C)
    want = lam.sum() ** 2 / np.sum(lam ** 2)
    assert participation_ratio(C) == pytest.approx(want, rel=1e-12)
    assert participation_ratio(lam) == pytest.approx(want, rel=1e-12)
    # the batched kernel on the identity resample is the same number
    assert participation_ratio_batch(X, np.arange(len(X))[None])[0] == pytest.approx(want, rel=1e-12)
    assert np.isnan(participation_ratio(np.zeros((p, p))))
    with pytest.raises(ValueError, match="square"):
        participation_ratio(np.ones((2, 3)))


# ---------------------------------------------------------------------------------- quadratic fit (full sample)
@pytest.mark.parametrize("n", [3, 6, 41])
def test_quadratic_fit_matches_polyfit_and_the_kernel(n):
    from cape_kernels import quadratic_fit

    rng = np.random.default_rng(n + 100)
    x = rng.uniform(8, 11, n)
    y = 1.7 * (x - 9.6) ** 2 + 30 + rng.normal(size=n) * 0.2
    v, a, b, c = quadratic_fit(x, y)
    pa, pb, pc = np.polyfit(x, y, 2)
    np.testing.assert_allclose([a, b, c], [pa, pb, pc], rtol=1e-9)
    assert v == pytest.approx(-pb / (2 * pa), rel=1e-12)
    # bit-identical to the resampling kernel's value on the identity row (one solve; NaN when a <= 0)
    k = quadratic_nc_batch(x, y, np.arange(n)[None])[0]
    assert k == v if a > 0 else np.isnan(k)
    assert all(np.isnan(quadratic_fit(np.array([1.0, 1, 2, 2]), np.arange(4.0))))   # 2 distinct x


# ---------------------------------------------------------------------------------- gamma rule and gamma N_c
def _gamma_table(n, n_fam, seed, ties=True):
    """Models sorted by (family, N) with equal-N ties and small |dB1| steps."""
    rng = np.random.default_rng(seed)
    fam = np.sort(rng.integers(0, n_fam, n))
    logn = np.round(rng.uniform(7.5, 11.5, n), 1 if ties else 6)
    order = np.lexsort((logn, fam))
    fam, logn = fam[order], logn[order]
    b1 = np.round(40 + 8 * (logn - 7.5) + rng.normal(size=n) * 2, 1)
    b2 = 45 + 3 * (logn - 9.5) ** 2 + rng.normal(size=n) * 1.5
    return fam.astype(np.int64), logn, b1, b2


@pytest.mark.parametrize("n,n_fam,min_delta", [(2, 1, 0.5), (9, 2, 0.5), (40, 5, 1.0), (63, 16, 0.0)])
def test_gamma_rule_matches_oracle(n, n_fam, min_delta):
    from cape_kernels import gamma_rule
    from cape_kernels.reference_resample import gamma_rule_ref

    fam, logn, b1, b2 = _gamma_table(n, n_fam, n)
    g, c = gamma_rule(fam, logn, b1, b2, min_delta)
    rg, rc = gamma_rule_ref(fam, logn, b1, b2, min_delta)
    np.testing.assert_array_equal(c, rc)
    np.testing.assert_array_equal(g, rg)                # same IEEE operations: exact
    if n > 9:
        assert set(c.tolist()) >= {0, 1, 2}


@pytest.mark.parametrize("estimator", ["sign-change", "gamma-fit"])
@pytest.mark.parametrize("n,n_fam", [(5, 1), (23, 3), (63, 16)])
@pytest.mark.parametrize("attach,window", [("larger", None), ("smaller", (8.0, 11.0)), ("midpoint", None)])
def test_gamma_nc_matches_oracle(estimator, n, n_fam, attach, window):
    from cape_kernels import gamma_nc_batch
    from cape_kernels.reference_resample import gamma_nc_batch_ref

    fam, logn, b1, b2 = _gamma_table(n, n_fam, 7 * n)
    lo, hi = window or (-np.inf, np.inf)
    idx = np.vstack([np.arange(n)[None], resample_indices(fam if n_fam > 1 else None, 250, n, n=n)])
    got = gamma_nc_batch(estimator, fam, logn, b1, b2, idx, 0.5, lo, hi, attach)
    ref = gamma_nc_batch_ref(estimator, fam, logn, b1, b2, idx, 0.5, lo, hi, attach)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert np.isfinite(got).sum() > 0
    rtol = 0 if estimator == "sign-change" else 1e-9    # the sign change picks a value; the fit solves
    np.testing.assert_allclose(got, ref, rtol=rtol)


def test_gamma_nc_hand_cases():
    from cape_kernels import gamma_line, gamma_nc_batch, nc_intervals

    # one family, x = 8, 9, 10, 11: gammas -1 (8->9), +2 (9->10), +1 (10->11)
    fam = np.zeros(4, np.int64)
    x = np.array([8.0, 9.0, 10.0, 11.0])
    b1 = np.array([10.0, 11.0, 12.0, 13.0])
    b2 = np.array([5.0, 4.0, 6.0, 7.0])
    row = np.arange(4)[None]
    assert gamma_nc_batch("sign-change", fam, x, b1, b2, row, 0.5)[0] == 10.0
    assert gamma_nc_batch("sign-change", fam, x, b1, b2, row, 0.5, attach="smaller")[0] == 9.0
    assert gamma_nc_batch("sign-change", fam, x, b1, b2, row, 0.5, attach="midpoint")[0] == 9.5
    # gamma-fit: points (8.5, -1), (9.5, 2), (10.5, 1): slope 1, mean (9.5, 2/3) -> zero at 9.5 - 2/3
    xs, gs = nc_intervals(fam, x, b1, b2, 0.5)
    np.testing.assert_array_equal(xs, [8.5, 9.5, 10.5])
    assert gamma_line(xs, gs) == pytest.approx((1.0, 9.5 - 2 / 3), rel=1e-14)
    assert gamma_nc_batch("gamma-fit", fam, x, b1, b2, row, 0.5)[0] == pytest.approx(9.5 - 2 / 3, rel=1e-14)
    assert np.isnan(gamma_nc_batch("gamma-fit", fam, x, b1, b2, row, 0.5, 9.0, 11.0)[0])   # zero at 8.83
    # a duplicated model (equal N) makes its interval undefined; dB1 below min_delta too
    dup = np.array([[0, 1, 1, 2, 3]])
    assert gamma_nc_batch("sign-change", fam, x, b1, b2, dup, 0.5)[0] == 10.0
    assert np.isnan(gamma_nc_batch("sign-change", fam, x, b1, b2, row, 1.5)[0])
    with pytest.raises(ValueError, match="estimator"):
        gamma_nc_batch("quadratic", fam, x, b1, b2, row, 0.5)


@pytest.mark.parametrize("strata", [None, "fam"], ids=["plain", "strat"])
@pytest.mark.parametrize("estimator", ["sign-change", "gamma-fit"])
def test_fused_gamma_nc_bit_identical_to_batched(strata, estimator):
    from cape_kernels import gamma_nc_batch, gamma_nc_boot
    from cape_kernels.resample import SERIAL_WORK

    fam, logn, b1, b2 = _gamma_table(63, 16, 3)
    s = fam if strata else None
    big = SERIAL_WORK // 63 + 300                           # parallel path
    idx = resample_indices(s, big, 41, n=63, start=17)
    a = gamma_nc_boot(estimator, fam, logn, b1, b2, s, big, 41, 0.5, 8.0, 11.0, "midpoint", start=17)
    b = gamma_nc_batch(estimator, fam, logn, b1, b2, idx, 0.5, 8.0, 11.0, "midpoint")
    assert a.tobytes() == b.tobytes() and np.isfinite(a).sum() > 0
    small = gamma_nc_boot(estimator, fam, logn, b1, b2, s, 9, 41, 0.5, 8.0, 11.0, "midpoint", start=17)
    assert small.tobytes() == a[:9].tobytes()               # serial twin == parallel kernel


def test_gamma_nc_thread_count_independent():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread")
    from cape_kernels import gamma_nc_boot

    fam, logn, b1, b2 = _gamma_table(63, 16, 9)
    old = numba.get_num_threads()
    out = []
    try:
        for t in (1, 2):
            numba.set_num_threads(t)
            out.append([gamma_nc_boot(e, fam, logn, b1, b2, fam, 3000, 5, 0.5).tobytes()
                        for e in ("sign-change", "gamma-fit")])
    finally:
        numba.set_num_threads(old)
    assert out[0] == out[1]
