"""Permutation p-values: one counting rule, scipy's (``scipy.stats.permutation_test``; docs/METHODS.md
§2.3, §2.6).

The statistic is one where larger is more extreme (a two-sided test of a correlation passes |r|, as
scipy's ``alternative='greater'`` on |r|).  With null values t_1 .. t_R of R permutations (NaN values,
an undefined statistic, are dropped first and R counts the finite ones):

- random permutations (``exact=False``): p = (#{t_j >= t_obs} + 1) / (R + 1), the add-one estimate
  (the observed pairing is one of the possible permutations, so p is never 0);
- every permutation enumerated (``exact=True``, the identity among them): p = #{t_j >= t_obs} / R.

Ties: t_j >= t_obs is tested as t_j >= t_obs - 100 eps |t_obs| (eps the float64 machine epsilon,
scipy's relative tolerance), so a null value equal to the observed one in exact arithmetic but off
by rounding counts (the identity permutation of an exact test always does).
"""
from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = ["permutation_pvalue", "all_permutations", "TIE_TOLERANCE"]

TIE_TOLERANCE = 100.0 * float(np.finfo(np.float64).eps)  # relative, as scipy.stats.permutation_test


def permutation_pvalue(null, observed: float, *, exact: bool) -> float:
    """p-value of ``observed`` against its permutation null distribution ``null`` (float64[R]); see the
    module doc for the rule.  NaN when ``observed`` is NaN or no null value is finite."""
    null = np.asarray(null, dtype=np.float64).reshape(-1)
    null = null[np.isfinite(null)]
    observed = float(observed)
    if not math.isfinite(observed) or null.size == 0:
        return math.nan
    hits = int(np.count_nonzero(null >= observed - abs(TIE_TOLERANCE * observed)))
    add = 0 if exact else 1
    return (hits + add) / (null.size + add)


def all_permutations(n: int) -> np.ndarray:
    """int64[n!, n]: every permutation of 0 .. n-1, in lexicographic order (the identity first); the
    caller bounds n (n! rows)."""
    return np.array(list(itertools.permutations(range(n))), dtype=np.int64).reshape(math.factorial(n), n)
