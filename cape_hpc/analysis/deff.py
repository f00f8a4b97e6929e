"""Effective dimensionality d_eff of the five scores (docs/METHODS.md §2.5), per phase, with a bootstrap.

d_eff = (sum lambda)^2 / sum lambda^2 over the eigenvalues of the covariance (default, ddof=1) or the
correlation of the score columns over a set of models; it equals (tr C)^2 / tr(C^2), which is how
``cape_kernels.participation_ratio_boot`` evaluates it (fused resampling, no eigendecomposition) for
the estimate and every bootstrap resample alike.  The eigenvalues are reported beside it.

Groups: the three phases (a model's phase is its interval's phase for the pair ``pair``, see
``phases``) and ``all`` (every model with the five scores).  The bootstrap resamples models within
each family (family-stratified, default) or across the group (``stratify=False``).

Choices where the definition is silent: models with a blank score in any of the columns are left out
(``dropped``); d_eff is scale invariant, so percent vs fraction does not change it; a group with
fewer than 3 models gets NaN with a reason; a resample whose covariance is zero (or, for the
correlation, with a constant column) is an invalid fit and dropped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cape_hpc.analysis._common import check_columns, complete_rows, provenance, select_families
from cape_hpc.analysis.options import DeffOptions, PhasesOptions, narrow
from cape_hpc.errors import OptionError
from cape_hpc.schema import BootstrapSummary, Provenance, Result
from cape_hpc.stats import BootstrapOptions, ParticipationRatioStatistic, bootstrap, summarize

MIN_MODELS = 3


@dataclass
class DeffGroup:
    group: str
    n_models: int
    n_families: int
    d_eff: float
    eigenvalues: list[float]     # descending
    reason: str
    bootstrap: BootstrapSummary


@dataclass
class DeffResult(Result):
    columns: list[str]
    matrix: str                  # 'covariance' | 'correlation'
    b1: str
    b2: str
    groups: list[DeffGroup]
    dropped: list[str]
    provenance: Provenance

    def by_group(self) -> dict[str, DeffGroup]:
        return {g.group: g for g in self.groups}


def effective_dimension(df: pd.DataFrame, opts: DeffOptions | None = None) -> DeffResult:
    """d_eff per phase (and over all models), each with a (family-stratified) bootstrap interval."""
    opts = DeffOptions() if opts is None else opts
    if not isinstance(opts, DeffOptions):
        raise OptionError(f"effective_dimension: opts must be DeffOptions, got {type(opts).__name__}")
    columns = list(opts.columns)
    check_columns(df, columns, "--columns")
    corr = opts.matrix == "correlation"
    from cape_hpc.analysis.phases import phases

    sub = select_families(df, opts.families)
    ph = phases(sub, narrow(opts, PhasesOptions, families=None)).phase_of()
    sub, dropped = complete_rows(sub, columns)
    label = sub["model"].astype(str).map(ph).fillna("")
    levels = opts.levels if opts.bootstrap else BootstrapOptions().levels
    out = []
    for gname in opts.groups:
        g = sub if gname == "all" else sub.loc[label == gname]
        X = g[columns].to_numpy(float)
        n = len(g)
        summary = BootstrapSummary.empty(levels)
        if n < MIN_MODELS:
            out.append(DeffGroup(gname, n, int(g["family"].nunique()), math.nan, [],
                                 f"{n} model(s) < {MIN_MODELS}", summary))
            continue
        stat = ParticipationRatioStatistic(X, corr)
        C = np.corrcoef(X, rowvar=False) if corr else np.cov(X, rowvar=False)
        lam = np.sort(np.linalg.eigvalsh(C))[::-1] if np.all(np.isfinite(C)) else np.full(len(columns), math.nan)
        value = float(stat.full())
        if opts.bootstrap:
            strata = pd.factorize(g["family"])[0].astype(np.int64)
            summary = summarize(bootstrap(stat, opts, n=n, strata=strata))
        out.append(DeffGroup(gname, n, int(g["family"].nunique()), value, [float(v) for v in lam],
                             "" if not math.isnan(value) else "degenerate covariance", summary))
    return DeffResult(columns, opts.matrix, opts.b1, opts.b2, out, dropped,
                      provenance("effective_dimension", opts, {"scores": df},
                                 seed=opts.seed if opts.bootstrap else None,
                                 n_resamples=opts.n_resamples if opts.bootstrap else None))
