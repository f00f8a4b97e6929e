"""Population coupling (SPEC 2.3): Pearson r and Spearman rho of (B1, B2) over a set of models.

The set is all models (``group_by=None``), or one row per family or per phase (``group_by=
'family' | 'phase'``; a model's phase is its interval's phase, see ``phases``).

p-values (two-sided):
- ``analytic``: scipy.stats.pearsonr / spearmanr (t distribution);
- ``permutation``: B2 permuted against B1 ``n_permutations`` times (seeded, numpy PCG64), p =
  (1 + #{|r_perm| >= |r_obs|}) / (1 + n_permutations) -- the standard add-one estimate;
- ``exact``: every one of the n! pairings (allowed for n <= 9), p = #{|r_perm| >= |r_obs|} / n!.
The analytic p is always reported; the permutation/exact one in addition when asked.
Choices where SPEC is silent: a comparison |r_perm| >= |r_obs| uses a relative tolerance of 1e-12
(the identity pairing must count); groups with fewer than 3 models get NaN with a reason.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from cape_hpc.analysis._common import (check_choice, check_pair, check_positive_int, complete_rows,
                                       family_order, provenance, select_families)
from cape_hpc.errors import OptionError
from cape_hpc.schema import Provenance

P_METHODS = ("analytic", "permutation", "exact")
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
class PopulationResult:
    b1: str
    b2: str
    group_by: str
    p_method: str
    n_permutations: int
    groups: list[GroupCoupling]
    dropped: list[str]
    provenance: Provenance


def _rank(a: np.ndarray) -> np.ndarray:
    return stats.rankdata(a, axis=-1)


def _corr_rows(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Pearson r of x with each row of ys."""
    xc = x - x.mean()
    yc = ys - ys.mean(axis=-1, keepdims=True)
    den = np.sqrt((xc ** 2).sum()) * np.sqrt((yc ** 2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (yc @ xc) / den


def permutation_p(x: np.ndarray, y: np.ndarray, *, method: str = "permutation", n_permutations: int = 10000,
                  seed: int = 0, spearman: bool = False) -> float:
    """Two-sided permutation p-value of the correlation of x and y (see module doc)."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if spearman:
        x, y = _rank(x), _rank(y)
    obs = abs(_corr_rows(x, y[None, :])[0])
    if not np.isfinite(obs):
        return math.nan
    if method == "exact":
        if len(x) > EXACT_MAX_N:
            raise OptionError(f"option 'p_method': exact needs n <= {EXACT_MAX_N}, got n = {len(x)}")
        perms = np.array(list(itertools.permutations(range(len(y)))))
        r = np.abs(_corr_rows(x, y[perms]))
        return float(np.mean(r >= obs * (1 - 1e-12)))
    rng = np.random.default_rng(seed)
    hits = 0
    done = 0
    while done < n_permutations:  # chunks keep memory small
        k = min(8192, n_permutations - done)
        ys = rng.permuted(np.broadcast_to(y, (k, len(y))), axis=1)
        hits += int(np.sum(np.abs(_corr_rows(x, ys)) >= obs * (1 - 1e-12)))
        done += k
    return (1 + hits) / (1 + n_permutations)


def correlate(x, y, group: str = "all", *, p_method: str = "analytic", n_permutations: int = 10000,
              seed: int = 0) -> GroupCoupling:
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
        pp = permutation_p(x, y, method=p_method, n_permutations=n_permutations, seed=seed)
        sp = permutation_p(x, y, method=p_method, n_permutations=n_permutations, seed=seed, spearman=True)
    return GroupCoupling(group, n, float(pr.statistic), float(pr.pvalue), float(sr.statistic),
                         float(sr.pvalue), pp, sp, "")


def population_coupling(df: pd.DataFrame, b1: str = "HS", b2: str = "TQA", *, group_by: str | None = None,
                        families=None, p_method: str = "analytic", n_permutations: int = 10000,
                        seed: int = 0, min_delta: float | None = None, tax_below: float = -0.1,
                        bonus_above: float = 0.1) -> PopulationResult:
    """Pearson and Spearman coupling of (b1, b2) over all models, per family, or per phase."""
    check_pair(df, b1, b2)
    check_choice("group_by", group_by, (None, "all", "family", "phase"))
    check_choice("p_method", p_method, P_METHODS)
    n_permutations = check_positive_int("n_permutations", n_permutations)
    sub = select_families(df, families)
    sub, dropped = complete_rows(sub, (b1, b2))
    groups: list[tuple[str, pd.DataFrame]]
    if group_by in (None, "all"):
        groups = [("all", sub)]
    elif group_by == "family":
        groups = [(f, sub.loc[sub["family"] == f]) for f in family_order(sub)]
    else:
        from cape_hpc.analysis.phases import phases

        ph = phases(sub, b1, b2, min_delta=min_delta, tax_below=tax_below, bonus_above=bonus_above).phase_of()
        lab = sub["model"].map(ph).fillna("")
        groups = [(p, sub.loc[lab == p]) for p in ("tax", "transition", "bonus")]
    out = [correlate(g[b1].to_numpy(float), g[b2].to_numpy(float), name, p_method=p_method,
                     n_permutations=n_permutations, seed=seed) for name, g in groups]
    opts = {"b1": b1, "b2": b2, "group_by": group_by or "all", "p_method": p_method,
            "families": None if families is None else list(np.atleast_1d(families))}
    if group_by == "phase":
        opts.update(min_delta=min_delta, tax_below=tax_below, bonus_above=bonus_above)
    perm = p_method == "permutation"
    return PopulationResult(b1, b2, group_by or "all", p_method, n_permutations if perm else 0, out, dropped,
                            provenance("population_coupling", opts, {"scores": df},
                                       seed=seed if perm else None, n_resamples=n_permutations if perm else None))
