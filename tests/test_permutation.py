"""cape_hpc.stats.permutation_pvalue against scipy.stats.permutation_test (its counting rule and its
tie tolerance), and the two analyses that use it (population coupling, the width control)."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cape_hpc.analysis.options import WidthOptions
from cape_hpc.analysis.width import width_normalisation
from cape_hpc.stats import all_permutations, permutation_pvalue

RNG = np.random.default_rng(20261207)
X = RNG.normal(size=7)
Y = 0.5 * X + RNG.normal(size=7)


def _abs_r(y, axis=-1):
    return np.abs(stats.pearsonr(np.broadcast_to(X, y.shape), y, axis=axis).statistic)


def test_random_permutations_use_scipys_add_one_rule():
    ref = stats.permutation_test((Y,), _abs_r, permutation_type="pairings", n_resamples=999, vectorized=True,
                                 alternative="greater", rng=np.random.default_rng(3))
    assert ref.null_distribution.size == 999          # random, not the 5040 exact pairings
    got = permutation_pvalue(ref.null_distribution, ref.statistic, exact=False)
    assert got == ref.pvalue
    hits = np.count_nonzero(ref.null_distribution >= ref.statistic * (1 - 1e-13))
    assert got == (hits + 1) / (999 + 1)


def test_exact_enumeration_counts_the_identity_and_divides_by_n_factorial():
    ref = stats.permutation_test((Y,), _abs_r, permutation_type="pairings", n_resamples=np.inf, vectorized=True,
                                 alternative="greater")
    null = _abs_r(Y[all_permutations(7)])
    assert null.shape == (5040,) and math.isclose(null[0], ref.statistic, rel_tol=1e-15)  # the identity first
    got = permutation_pvalue(null, ref.statistic, exact=True)
    assert got == pytest.approx(ref.pvalue, abs=1e-15) and got * 5040 == round(got * 5040) >= 1


def test_ties_within_scipys_relative_tolerance_count_and_nan_nulls_are_dropped():
    obs = 0.1 + 0.2                                   # 0.30000000000000004
    null = np.array([0.3, obs * (1 - 50 * np.finfo(float).eps), obs * (1 - 1e-12), 0.2, np.nan])
    # 0.3 and the value 50 eps below count (tolerance 100 eps |obs|); 1e-12 below does not; NaN is dropped
    assert permutation_pvalue(null, obs, exact=True) == 2 / 4
    assert permutation_pvalue(null, obs, exact=False) == 3 / 5
    ref = stats.permutation_test((np.arange(3.0),), lambda y: 0.0 * y[0] + obs, permutation_type="pairings",
                                 n_resamples=np.inf, alternative="greater")
    assert ref.pvalue == permutation_pvalue(ref.null_distribution, obs, exact=True) == 1.0
    assert math.isnan(permutation_pvalue(null, math.nan, exact=True))
    assert math.isnan(permutation_pvalue(np.array([np.nan]), obs, exact=False))


def test_width_control_p_is_the_shared_rule():
    """p_null of the width control: #{r_null >= r_after} / n! when exact, (+1)/(R+1) when drawn."""
    df = pd.DataFrame({"model": list("abcdef"), "family": "F", "params": [1e8, 2e8, 4e8, 8e8, 1.6e9, 3.2e9],
                       "d_model": [256, 512, 768, 1024, 2048, 2560], "HS": [30, 33, 35, 41, 45, 52],
                       "TQA": [41, 40, 38, 37, 36, 33]})
    exact = width_normalisation(df, WidthOptions(n_permutations=720)).families[0]
    drawn = width_normalisation(df, WidthOptions(n_permutations=719, seed=2)).families[0]
    assert exact.exact and not drawn.exact
    f = df["d_model"].to_numpy(float) / 512.0
    x, y = df["HS"].to_numpy(float), df["TQA"].to_numpy(float)
    r_after = np.corrcoef(x / f, y / f)[0, 1]
    assert exact.r_after == pytest.approx(r_after, rel=1e-12)
    for fam, add in ((exact, 0), (drawn, 1)):
        hits = np.count_nonzero(fam.r_null >= fam.r_after * (1 - 1e-13))
        assert fam.p_null == (hits + add) / (fam.n_null + add)
