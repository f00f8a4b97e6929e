"""Effective dimensionality d_eff of the five scores (SPEC 2.5), per phase, with a bootstrap.

d_eff = (sum lambda)^2 / sum lambda^2 over the eigenvalues of the covariance (default, ddof=1) or the
correlation of the score columns over a set of models; it equals (tr C)^2 / tr(C^2), which is how
the bootstrap kernel (``cape_kernels.participation_ratio_batch``) evaluates it without an
eigendecomposition.

Groups: the three phases (a model's phase is its interval's phase for the pair ``b1``/``b2``,
see ``phases``) and ``all`` (every model with the five scores).  The bootstrap resamples models
within each family (family-stratified, default) or across the group (``stratify=False``).

Choices where SPEC is silent: models with a blank score in any of the columns are left out
(``dropped``); d_eff is scale invariant, so percent vs fraction does not change it; a group with
fewer than 3 models gets NaN with a reason; a resample whose covariance is zero (or, for the
correlation, with a constant column) is an invalid fit and dropped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cape_hpc.analysis._boot import DEFAULT_LEVELS, BootSummary, check_boot_options, empty_summary, run_bootstrap
from cape_hpc.analysis._common import (PHASES, check_choice, check_columns, complete_rows, provenance,
                                       select_families)
from cape_hpc.schema import Provenance
from cape_hpc.io.scores import SCORE_COLUMNS
from cape_hpc.stats.bootstrap import BatchStatistic

GROUPS = (*PHASES, "all")
MIN_MODELS = 3


def participation_ratio(X: np.ndarray, corr: bool = False) -> float:
    """d_eff of the rows of X from the eigenvalues (numpy eigvalsh): the direct definition."""
    X = np.asarray(X, float)
    if X.shape[0] < 2:
        return math.nan
    C = np.corrcoef(X, rowvar=False) if corr else np.cov(X, rowvar=False)
    if not np.all(np.isfinite(C)):
        return math.nan
    lam = np.linalg.eigvalsh(C)
    den = float((lam ** 2).sum())
    return float(lam.sum() ** 2 / den) if den > 0 else math.nan


class DeffStatistic(BatchStatistic):
    """d_eff of X's rows as a ``cape_hpc.stats.bootstrap.BatchStatistic`` (kernel batch, eigvalsh full)."""

    def __init__(self, X: np.ndarray, corr: bool):
        self.X = np.ascontiguousarray(X, dtype=np.float64)
        self.corr = bool(corr)
        self.n = self.X.shape[0]
        self.name = "d_eff_corr" if self.corr else "d_eff_cov"

    def __call__(self, idx: np.ndarray) -> float:
        return participation_ratio(self.X[np.asarray(idx)], self.corr)

    def full(self) -> float:
        return participation_ratio(self.X, self.corr)

    def batch(self, idx: np.ndarray) -> np.ndarray:
        import cape_kernels

        return np.asarray(cape_kernels.participation_ratio_batch(self.X, np.ascontiguousarray(idx, np.int64),
                                                                 corr=self.corr), dtype=np.float64)

    def jackknife(self) -> np.ndarray:
        loo = np.array([np.delete(np.arange(self.n), i) for i in range(self.n)], dtype=np.int64)
        return self.batch(loo)


@dataclass
class DeffGroup:
    group: str
    n_models: int
    n_families: int
    d_eff: float
    eigenvalues: list[float]     # descending
    reason: str
    bootstrap: BootSummary


@dataclass
class DeffResult:
    columns: list[str]
    matrix: str                  # 'covariance' | 'correlation'
    b1: str
    b2: str
    groups: list[DeffGroup]
    dropped: list[str]
    provenance: Provenance

    def by_group(self) -> dict[str, DeffGroup]:
        return {g.group: g for g in self.groups}


def effective_dimension(df: pd.DataFrame, *, columns=SCORE_COLUMNS, matrix: str = "covariance",
                        groups=GROUPS, b1: str = "HS", b2: str = "TQA", min_delta: float | None = None,
                        tax_below: float = -0.1, bonus_above: float = 0.1, families=None,
                        bootstrap: bool = True, n_resamples: int = 10000, seed: int = 0, stratify: bool = True,
                        ci_method: str = "percentile", levels=DEFAULT_LEVELS, progress: bool = False) -> DeffResult:
    """d_eff per phase (and over all models), each with a (family-stratified) bootstrap interval."""
    columns = list(columns)
    check_columns(df, columns, "columns")
    check_choice("matrix", matrix, ("covariance", "correlation"))
    for g in groups:
        check_choice("groups", g, GROUPS)
    if bootstrap:
        n_resamples, ci_method, levels = check_boot_options(n_resamples, ci_method, levels)
    from cape_hpc.analysis.phases import phases

    sub = select_families(df, families)
    ph = phases(sub, b1, b2, min_delta=min_delta, tax_below=tax_below, bonus_above=bonus_above).phase_of()
    sub, dropped = complete_rows(sub, columns)
    label = sub["model"].astype(str).map(ph).fillna("")
    out = []
    for gname in groups:
        g = sub if gname == "all" else sub.loc[label == gname]
        X = g[columns].to_numpy(float)
        stat = DeffStatistic(X, matrix == "correlation")
        n = len(g)
        summary = empty_summary(levels if bootstrap else DEFAULT_LEVELS)
        if n < MIN_MODELS:
            out.append(DeffGroup(gname, n, g["family"].nunique(), math.nan, [], f"{n} model(s) < {MIN_MODELS}",
                                 summary))
            continue
        C = np.corrcoef(X, rowvar=False) if stat.corr else np.cov(X, rowvar=False)
        lam = np.sort(np.linalg.eigvalsh(C))[::-1] if np.all(np.isfinite(C)) else np.full(len(columns), math.nan)
        value = stat.full()
        if bootstrap:
            strata = pd.factorize(g["family"])[0].astype(np.int64) if stratify else None
            summary = run_bootstrap(stat, n, strata=strata, n_resamples=n_resamples, seed=seed, levels=levels,
                                    method=ci_method, progress=progress)
        out.append(DeffGroup(gname, n, g["family"].nunique(), value, [float(v) for v in lam],
                             "" if not math.isnan(value) else "degenerate covariance", summary))
    opts = {"columns": columns, "matrix": matrix, "groups": list(groups), "phase_pair": [b1, b2],
            "min_delta": min_delta, "tax_below": tax_below, "bonus_above": bonus_above,
            "families": None if families is None else list(np.atleast_1d(families)), "bootstrap": bool(bootstrap)}
    if bootstrap:
        opts.update(stratify=bool(stratify), ci_method=ci_method, levels=list(levels))
    return DeffResult(columns, matrix, b1, b2, out, dropped,
                      provenance("effective_dimension", opts, {"scores": df}, seed=int(seed) if bootstrap else None,
                                 n_resamples=n_resamples if bootstrap else None))
