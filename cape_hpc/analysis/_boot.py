"""Adapter from the analyses to the bootstrap engine (``cape_hpc.stats.bootstrap``).

The analyses keep a flat summary of each bootstrap (``BootSummary``), not the resample
distribution itself, so results stay small in HDF5 and JSON.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cape_hpc.analysis._common import check_choice, check_levels, check_positive_int

CI_METHODS = ("percentile", "bca")
DEFAULT_LEVELS = (0.95, 0.68)


@dataclass
class BootSummary:
    median: float
    ci: dict[str, list[float]] = field(default_factory=dict)   # "0.95" -> [lo, hi]
    n_valid: int = 0
    n_resamples: int = 0
    seed: int | None = None
    stratified: bool = False
    method: str = ""
    note: str = ""

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        lo, hi = self.ci.get(level_key(level), (math.nan, math.nan))
        return float(lo), float(hi)


def level_key(level: float) -> str:
    return f"{float(level):g}"


def empty_summary(levels=DEFAULT_LEVELS) -> BootSummary:
    return BootSummary(math.nan, {level_key(v): [math.nan, math.nan] for v in levels})


def check_boot_options(n_resamples: int, ci_method: str, levels) -> tuple[int, str, tuple[float, ...]]:
    n_resamples = check_positive_int("n_resamples", n_resamples)
    check_choice("ci_method", ci_method, CI_METHODS)
    return n_resamples, ci_method, check_levels(levels)


def run_bootstrap(statistic, n: int, *, strata: np.ndarray | None, n_resamples: int, seed: int,
                  levels=DEFAULT_LEVELS, method: str = "percentile", progress: bool = False) -> BootSummary:
    """Run ``cape_hpc.stats.bootstrap.bootstrap`` and keep its median, intervals and counts."""
    from cape_hpc.stats.bootstrap import bootstrap

    res = bootstrap(statistic, n, strata=strata, n_resamples=n_resamples, seed=seed, levels=tuple(levels),
                    method=method, progress=progress)
    ci = {}
    for lv in levels:
        lo, hi = _lookup(res.ci, lv)
        ci[level_key(lv)] = [float(lo), float(hi)]
    return BootSummary(float(res.median), ci, int(res.n_valid), int(res.n_resamples), int(seed),
                       bool(strata is not None), method, str(getattr(res, "note", "")))


def _lookup(ci: dict, level: float):
    if level in ci:
        return ci[level]
    for k, v in ci.items():
        if abs(float(k) - level) < 1e-12:
            return v
    return (math.nan, math.nan)
