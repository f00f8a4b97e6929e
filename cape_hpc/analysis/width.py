"""Width normalisation (docs/METHODS.md §2.6) with its random-permutation control.

Per family: s' = s / (d_model / d_ref) (d_ref = 512) for both scores; Pearson r(B1, B2) before and
after.  Dividing two bounded scores by one growing factor makes r positive almost by construction,
so the control divides by a random permutation of the family's own widths instead: its null
distribution of r (``n_permutations`` draws, seeded) shows how much of the flip the ratio alone
explains.  Reported per family: r before, r after, the null mean / median / 2.5% and 97.5%
quantiles, the fraction of null r that are positive, and p_null = (1 + #{r_null >= r_after}) /
(1 + n_permutations) (one-sided: is the real width ordering more positive than a random one?;
``cape_hpc.stats.permutation_pvalue``, scipy's rule: #{r_null >= r_after} / n! when exact).

Choices where the paper is silent: a family needs >= 3 models with a known d_model (fewer: NaN with a
reason); a model without d_model is left out (``dropped``); when n! <= n_permutations the control
enumerates every permutation exactly once (``exact`` = True) instead of drawing; r is scale
invariant, so percent vs fraction does not change it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cape_hpc.analysis._common import (check_pair, complete_rows, family_groups, pearson_rows, provenance,
                                       require_table_columns, select_families, sort_by_n)
from cape_hpc.analysis.options import WidthOptions
from cape_hpc.schema import Provenance, Result
from cape_hpc.stats.intervals import percentile_interval
from cape_hpc.stats.permutation import all_permutations, permutation_pvalue

MIN_MODELS = 3


@dataclass
class WidthFamily:
    family: str
    n: int
    r_before: float
    r_after: float
    null_mean: float
    null_median: float
    null_q025: float
    null_q975: float
    null_frac_positive: float
    p_null: float
    exact: bool
    n_null: int
    reason: str
    r_null: np.ndarray          # the control's null distribution of r


@dataclass
class WidthResult(Result):
    b1: str
    b2: str
    d_ref: float
    n_permutations: int
    families: list[WidthFamily]
    dropped: list[str]
    provenance: Provenance


def width_null(b1: np.ndarray, b2: np.ndarray, widths: np.ndarray, d_ref: float, n_permutations: int,
               rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """r of (b1 / (w_perm / d_ref), b2 / (w_perm / d_ref)) for random (or all) permutations of widths."""
    n = len(widths)
    if math.factorial(n) <= n_permutations:
        perms = all_permutations(n)
        exact = True
    else:
        perms = np.argsort(rng.random((n_permutations, n)), axis=1)
        exact = False
    f = widths[perms] / d_ref                       # [P, n]
    return pearson_rows(b1[None, :] / f, b2[None, :] / f), exact


def width_normalisation(df: pd.DataFrame, opts: WidthOptions | None = None) -> WidthResult:
    """r before/after width normalisation per family, with the permuted-width null (module doc)."""
    opts = opts or WidthOptions()
    b1, b2, d_ref, n_permutations = opts.b1, opts.b2, opts.d_ref, opts.n_permutations
    require_table_columns(df, ("d_model",), "scores")
    check_pair(df, b1, b2)
    sub = select_families(df, opts.families)
    sub, dropped = complete_rows(sub, (b1, b2, "d_model"))
    rng = np.random.default_rng(opts.seed)
    out = []
    nan = math.nan
    for fam, g in family_groups(sub):  # one pass over the table, not a filter per family
        g = sort_by_n(g)
        n = len(g)
        if n < MIN_MODELS:
            out.append(WidthFamily(str(fam), n, nan, nan, nan, nan, nan, nan, nan, nan, False, 0,
                                   f"{n} model(s) with d_model < {MIN_MODELS}", np.empty(0)))
            continue
        x = g[b1].to_numpy(float)
        y = g[b2].to_numpy(float)
        w = g["d_model"].to_numpy(float)
        f = w / d_ref
        r0, r1 = float(pearson_rows(x, y)), float(pearson_rows(x / f, y / f))
        null, exact = width_null(x, y, w, d_ref, n_permutations, rng)
        ok = null[np.isfinite(null)]
        band = percentile_interval(ok, 0.95)
        out.append(WidthFamily(str(fam), n, r0, r1, float(ok.mean()), float(np.median(ok)), band.low, band.high,
                               float(np.mean(ok > 0)), permutation_pvalue(ok, r1, exact=exact), exact, len(ok), "",
                               null))
    return WidthResult(b1, b2, d_ref, n_permutations, out, dropped,
                       provenance("width_normalisation", opts, {"scores": df}, seed=opts.seed,
                                  n_resamples=n_permutations))
