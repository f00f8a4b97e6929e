"""Population coupling (docs/METHODS.md §2.3): Pearson r and Spearman rho of (B1, B2) over a set of models.

The set is all models (``group_by=None``), or one row per family or per phase (``group_by=
'family' | 'phase'``; a model's phase is its interval's phase, see ``phases``).

p-values (two-sided):
- ``analytic``: scipy.stats.pearsonr / spearmanr (t distribution);
- ``permutation``: B2 permuted against B1 ``n_permutations`` times (seeded, numpy PCG64), p =
  (1 + #{|r_perm| >= |r_obs|}) / (1 + n_permutations) -- the standard add-one estimate;
- ``exact``: every one of the n! pairings (allowed for n <= 9), p = #{|r_perm| >= |r_obs|} / n!.
Both by ``cape_hpc.stats.permutation_pvalue`` (scipy's rule and tie tolerance, statistic |r|).
The analytic p is always reported; the permutation/exact one in addition when asked.
Choices where the paper is silent: groups with fewer than 3 models get NaN with a reason.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from cape_hpc.analysis._common import (check_pair, complete_rows, family_groups, pearson_rows, provenance,
                                       select_families)
from cape_hpc.analysis.options import PHASES, PermutationOptions, PhasesOptions, PopulationOptions, narrow
from cape_hpc.errors import OptionError
from cape_hpc.schema import Provenance, Result
from cape_hpc.stats.permutation import all_permutations, permutation_pvalue

EXACT_MAX_N = 9


@dataclass
class GroupCoupling:
    group: str
    n: int
    pearson_r: float
    pearson_p: float
    spearman_rho: float
    spearman_p: float
    perm_pearson_p: float     # NaN unless p_method is permutation/exact
    perm_spearman_p: float
    reason: str


@dataclass
class PopulationResult(Result):
    b1: str
    b2: str
    units: str                # of the phase thresholds (group_by='phase'); r and rho do not depend on it
    group_by: str
    p_method: str
    n_permutations: int
    groups: list[GroupCoupling]
    dropped: list[str]
    provenance: Provenance


def _rank(a: np.ndarray) -> np.ndarray:
    return stats.rankdata(a, axis=-1)


def permutation_p(x: np.ndarray, y: np.ndarray, *, method: str = "permutation",
                  perm: PermutationOptions | None = None, spearman: bool = False) -> float:
    """Two-sided permutation p-value of the correlation of x and y (see module doc); ``perm`` gives
    the number of permutations and the seed."""
    if method not in ("permutation", "exact"):
        raise OptionError(f"option '--p-method': {method!r} is not a permutation method (permutation, exact)")
    perm = perm or PermutationOptions()
    n_permutations, seed = perm.n_permutations, perm.seed
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if spearman:
        x, y = _rank(x), _rank(y)
    obs = abs(float(pearson_rows(x, y)))
    if method == "exact":
        if len(x) > EXACT_MAX_N:
            raise OptionError(f"option '--p-method': exact needs n <= {EXACT_MAX_N}, got n = {len(x)}")
        return permutation_pvalue(np.abs(pearson_rows(x, y[all_permutations(len(y))])), obs, exact=True)
    rng = np.random.default_rng(seed)
    null = np.empty(n_permutations)
    for done in range(0, n_permutations, 8192):  # chunks keep memory small
        k = min(8192, n_permutations - done)
        null[done:done + k] = np.abs(pearson_rows(x, rng.permuted(np.broadcast_to(y, (k, len(y))), axis=1)))
    return permutation_pvalue(null, obs, exact=False)


def correlate(x, y, group: str = "all", *, p_method: str = "analytic",
              perm: PermutationOptions | None = None) -> GroupCoupling:
    """Pearson and Spearman coupling of one group, with a permutation p when ``p_method`` asks."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    n = len(x)
    nan = math.nan
    if n < 3:
        return GroupCoupling(group, n, nan, nan, nan, nan, nan, nan, f"n = {n} < 3")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return GroupCoupling(group, n, nan, nan, nan, nan, nan, nan, "a constant score")
    pr = stats.pearsonr(x, y)
    sr = stats.spearmanr(x, y)
    pp = sp = nan
    if p_method != "analytic":
        pp = permutation_p(x, y, method=p_method, perm=perm)
        sp = permutation_p(x, y, method=p_method, perm=perm, spearman=True)
    return GroupCoupling(group, n, float(pr.statistic), float(pr.pvalue), float(sr.statistic),
                         float(sr.pvalue), pp, sp, "")


def population_coupling(df: pd.DataFrame, opts: PopulationOptions | None = None) -> PopulationResult:
    """Pearson and Spearman coupling of (b1, b2) over all models, per family, or per phase."""
    opts = opts or PopulationOptions()
    b1, b2 = opts.b1, opts.b2
    check_pair(df, b1, b2)
    sub = select_families(df, opts.families)
    sub, dropped = complete_rows(sub, (b1, b2))
    groups: list[tuple[str, pd.DataFrame]]
    if opts.group_by == "all":
        groups = [("all", sub)]
    elif opts.group_by == "family":
        groups = family_groups(sub)
    else:
        from cape_hpc.analysis.phases import phases

        ph = phases(sub, narrow(opts, PhasesOptions, families=None)).phase_of()
        lab = sub["model"].map(ph).fillna("")
        groups = [(p, sub.loc[lab == p]) for p in PHASES]
    perm = narrow(opts, PermutationOptions)
    out = [correlate(g[b1].to_numpy(float), g[b2].to_numpy(float), name, p_method=opts.p_method, perm=perm)
           for name, g in groups]
    rand = opts.p_method == "permutation"
    return PopulationResult(b1, b2, opts.units, opts.group_by, opts.p_method, opts.n_permutations if rand else 0,
                            out, dropped,
                            provenance("population_coupling", opts, {"scores": df},
                                       seed=opts.seed if rand else None,
                                       n_resamples=opts.n_permutations if rand else None))
