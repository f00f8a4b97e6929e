"""Critical scale N_c (SPEC 2.4): three named estimators, per family or pooled, with a bootstrap.

Estimators (x = log10 N; results are reported as log10 N_c and N_c):

``sign-change``
    Walk the defined gammas (see ``coupling``) in order of N; N_c is the N of the model whose gamma
    is the first positive one after a negative one (``attach='larger'``, SPEC's rule: the gamma is
    attached to the larger model).  Options: ``attach='smaller'`` reports the smaller model of that
    interval, ``attach='midpoint'`` its midpoint 10**x_mid.  Choices where SPEC is silent: undefined
    intervals and gamma == 0 exactly are skipped (they neither break nor make a change); pooled over
    several families, the intervals of all families (each computed within its family) are merged in
    order of their midpoint x (ties keep family order) and the same rule is applied.  No change gives
    NaN with a reason (all positive: N_c at or below the smallest model; all negative: above the
    largest).
``gamma-fit``
    Least squares gamma = g0 * (x_mid - log N_c) over the defined intervals (a line in x_mid);
    log N_c = -intercept / slope.  Choice: valid only when g0 > 0 (gamma rises through zero, the
    tax-to-bonus direction that defines N_c) and there are >= 2 intervals with distinct x_mid.  The
    zero crossing may lie far outside the data (a shallow line): it is then flagged ``extrapolated``,
    and an explicit ``window`` makes such fits invalid, as for the quadratic.
``quadratic``
    B2 = a x^2 + b x + c over the models (x = log10 N); log N_c = -b / (2a), valid only when a > 0
    and the vertex lies inside the window (default: the log N range of the models fitted; the same
    window is kept for every bootstrap resample).

Bootstrap: models are resampled with replacement (per family: within the family; pooled: within each
family when ``stratify`` else across all), the estimator is refitted and invalid fits (NaN) are
dropped; the median, the percentile (or BCa) intervals, the count of valid resamples and the seed are
reported.  Resampled duplicates of a model have equal N, so the interval between them is undefined
(SPEC 2.1) and skipped.  The estimators are evaluated over all resamples by numba loops (sign-change,
gamma-fit) or by ``cape_kernels.quadratic_nc_batch``; each resample depends only on its own index
row, so results do not depend on the thread count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit, prange

from cape_hpc.analysis._boot import (DEFAULT_LEVELS, BootSummary, check_boot_options, empty_summary,
                                     run_bootstrap)
from cape_hpc.analysis._common import (check_choice, check_finite, check_pair, check_units,
                                       complete_rows, family_order, provenance, select_families, sort_by_n)
from cape_hpc.analysis.coupling import default_min_delta
from cape_hpc.errors import OptionError
from cape_hpc.schema import Provenance
from cape_hpc.stats.bootstrap import BatchStatistic

ESTIMATORS = ("sign-change", "gamma-fit", "quadratic")
ATTACH = ("larger", "smaller", "midpoint")  # where the sign-change estimator places N_c in its interval
MIN_MODELS = 3


# ----------------------------------------------------------------------------------------------
# numba cores: `pos` is a sorted vector of positions into arrays pre-sorted by (family, N, name)

@njit(cache=True)
def _defined_intervals(pos, fam, logn, b1, b2, min_delta):
    m = len(pos)
    xs = np.empty(m)
    gs = np.empty(m)
    ln = np.empty(m)
    lp = np.empty(m)
    k = 0
    for j in range(1, m):
        a = pos[j - 1]
        b = pos[j]
        if fam[a] != fam[b] or logn[a] == logn[b]:
            continue
        d1 = b1[b] - b1[a]
        if abs(d1) < min_delta:
            continue
        xs[k] = 0.5 * (logn[a] + logn[b])
        gs[k] = (b2[b] - b2[a]) / d1
        ln[k] = logn[b]
        lp[k] = logn[a]
        k += 1
    return xs[:k], gs[:k], ln[:k], lp[:k]


@njit(cache=True)
def _sign_change(pos, fam, logn, b1, b2, min_delta, attach):
    """attach: 0 = larger model's log N, 1 = smaller model's, 2 = interval midpoint."""
    xs, gs, ln, lp = _defined_intervals(pos, fam, logn, b1, b2, min_delta)
    order = np.argsort(xs, kind="mergesort")
    prev = 0
    for j in order:
        g = gs[j]
        if g == 0.0:
            continue
        s = 1 if g > 0 else -1
        if prev == -1 and s == 1:
            if attach == 1:
                return lp[j]
            if attach == 2:
                return xs[j]
            return ln[j]
        prev = s
    return np.nan


@njit(cache=True)
def _gamma_fit(pos, fam, logn, b1, b2, min_delta, lo, hi):
    xs, gs, _, _ = _defined_intervals(pos, fam, logn, b1, b2, min_delta)
    n = len(xs)
    if n < 2:
        return np.nan
    xm = xs.mean()
    gm = gs.mean()
    sxx = 0.0
    sxy = 0.0
    for i in range(n):
        sxx += (xs[i] - xm) ** 2
        sxy += (xs[i] - xm) * (gs[i] - gm)
    if sxx <= 1e-300:
        return np.nan
    slope = sxy / sxx
    if not slope > 0:
        return np.nan
    v = xm - gm / slope
    if v < lo or v > hi:
        return np.nan
    return v


@njit(cache=True, parallel=True)
def _batch(kind, idx, fam, logn, b1, b2, min_delta, lo, hi, attach):
    r_count = idx.shape[0]
    out = np.empty(r_count)
    for r in prange(r_count):
        pos = np.sort(idx[r])
        if kind == 0:
            out[r] = _sign_change(pos, fam, logn, b1, b2, min_delta, attach)
        else:
            out[r] = _gamma_fit(pos, fam, logn, b1, b2, min_delta, lo, hi)
    return out


def quadratic_vertex(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> tuple[float, float, float, float, str]:
    """(log N_c, a, b, c, reason) of the least-squares parabola y = a x^2 + b x + c."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if len(np.unique(x)) < 3:
        return math.nan, math.nan, math.nan, math.nan, "fewer than 3 distinct N"
    a, b, c = np.polyfit(x, y, 2)
    if not a > 0:
        return math.nan, a, b, c, f"a = {a:.4g} <= 0 (no minimum)"
    xv = -b / (2 * a)
    if not lo <= xv <= hi:
        return math.nan, a, b, c, f"vertex log10 N = {xv:.3f} outside window [{lo:.3f}, {hi:.3f}]"
    return float(xv), float(a), float(b), float(c), ""


class NcStatistic(BatchStatistic):
    """One estimator on one set of models, as a ``cape_hpc.stats.bootstrap.BatchStatistic``.

    ``__call__(idx)`` evaluates one resample, ``batch(idx[R, n])`` all of them, ``full()`` the
    original data and ``jackknife()`` the leave-one-out values (for BCa).
    """

    def __init__(self, estimator: str, fam, logn, b1, b2, min_delta: float, lo: float, hi: float,
                 gamma_fit_window: bool = False, attach: str = "larger"):
        self.estimator = estimator
        self.attach = ATTACH.index(attach)
        self.fam = np.ascontiguousarray(fam, dtype=np.int64)
        self.logn = np.ascontiguousarray(logn, dtype=np.float64)
        self.b1 = np.ascontiguousarray(b1, dtype=np.float64)
        self.b2 = np.ascontiguousarray(b2, dtype=np.float64)
        self.min_delta = float(min_delta)
        self.lo, self.hi = float(lo), float(hi)
        # gamma-fit ignores the window unless one was asked for explicitly
        self.glo, self.ghi = (self.lo, self.hi) if gamma_fit_window else (-np.inf, np.inf)
        self.data_range = (float(self.logn.min()), float(self.logn.max())) if len(self.logn) else (math.nan, math.nan)
        self.n = len(self.logn)
        self.name = f"nc_{estimator}"

    def _one(self, pos: np.ndarray) -> float:
        pos = np.sort(np.asarray(pos, dtype=np.int64))
        if self.estimator == "sign-change":
            return float(_sign_change(pos, self.fam, self.logn, self.b1, self.b2, self.min_delta, self.attach))
        if self.estimator == "gamma-fit":
            return float(_gamma_fit(pos, self.fam, self.logn, self.b1, self.b2, self.min_delta, self.glo, self.ghi))
        return float(self.batch(pos[None, :])[0])

    __call__ = _one

    def full(self) -> float:
        return self._one(np.arange(self.n))

    def batch(self, idx: np.ndarray) -> np.ndarray:
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        if self.estimator == "quadratic":
            import cape_kernels

            return np.asarray(cape_kernels.quadratic_nc_batch(self.logn, self.b2, idx, self.lo, self.hi),
                              dtype=np.float64)
        kind = 0 if self.estimator == "sign-change" else 1
        return _batch(kind, idx, self.fam, self.logn, self.b1, self.b2, self.min_delta, self.glo, self.ghi,
                      self.attach)

    def jackknife(self) -> np.ndarray:
        allpos = np.arange(self.n)
        return np.array([self._one(np.delete(allpos, i)) for i in range(self.n)])


@dataclass
class NcEstimate:
    scope: str                 # family name, or 'pooled'
    estimator: str
    n_models: int
    n_intervals: int           # defined gamma intervals used (sign-change, gamma-fit)
    log10_nc: float            # NaN when invalid
    nc: float                  # 10 ** log10_nc (parameters)
    reason: str                # why invalid ('' when valid)
    g0: float                  # gamma-fit slope (NaN otherwise)
    a: float                   # quadratic coefficients (NaN otherwise)
    b: float
    c: float
    window: list[float]        # validity window in log10 N (quadratic; gamma-fit only when given)
    extrapolated: bool         # log10_nc lies outside the scope's log N range
    bootstrap: BootSummary     # log10 N_c distribution (median NaN when not run)


@dataclass
class NcResult:
    estimator: str
    b1: str
    b2: str
    pooled: bool
    units: str
    min_delta: float
    estimates: list[NcEstimate]
    dropped: list[str]
    provenance: Provenance

    def by_scope(self) -> dict[str, NcEstimate]:
        return {e.scope: e for e in self.estimates}


def _scope_arrays(sub: pd.DataFrame, fams: list[str], b1: str, b2: str, scale: float):
    parts = [sort_by_n(sub.loc[sub["family"] == f]) for f in fams]
    g = pd.concat(parts) if parts else sub.iloc[:0]
    code = {f: i for i, f in enumerate(fams)}
    return (g, g["family"].map(code).to_numpy(np.int64), np.log10(g["params"].to_numpy(float)),
            g[b1].to_numpy(float) * scale, g[b2].to_numpy(float) * scale)


def _no_change_reason(stat: NcStatistic) -> str:
    xs, gs, _, _ = _defined_intervals(np.arange(stat.n), stat.fam, stat.logn, stat.b1, stat.b2, stat.min_delta)
    gs = gs[gs != 0]
    if len(gs) == 0:
        return "no defined nonzero gamma"
    if (gs > 0).all():
        return "gamma positive at every interval: N_c at or below the smallest model"
    if (gs < 0).all():
        return "gamma negative at every interval: N_c above the largest model"
    return "no negative-to-positive change of gamma"


def _estimate(scope: str, estimator: str, stat: NcStatistic, strata, boot: dict | None) -> NcEstimate:
    nan = math.nan
    n = stat.n
    n_int = len(_defined_intervals(np.arange(n), stat.fam, stat.logn, stat.b1, stat.b2, stat.min_delta)[0])
    g0 = a = b = c = nan
    reason = ""
    if n < MIN_MODELS:
        value, reason = nan, f"{n} model(s) < {MIN_MODELS}"
    elif estimator == "quadratic":
        value, a, b, c, reason = quadratic_vertex(stat.logn, stat.b2, stat.lo, stat.hi)
    else:
        value = stat.full()
        if estimator == "gamma-fit":
            xs, gs, _, _ = _defined_intervals(np.arange(n), stat.fam, stat.logn, stat.b1, stat.b2, stat.min_delta)
            if len(xs) >= 2 and np.ptp(xs) > 0:
                g0 = float(np.polyfit(xs, gs, 1)[0])
            if math.isnan(value):
                reason = (f"{len(xs)} defined interval(s) < 2" if len(xs) < 2 else
                          f"g0 = {g0:.4g} <= 0 (gamma does not rise through zero)" if not g0 > 0 else
                          f"zero crossing outside window [{stat.lo:.3f}, {stat.hi:.3f}]")
        elif math.isnan(value):
            reason = _no_change_reason(stat)
    summary = empty_summary(boot["levels"] if boot else DEFAULT_LEVELS)
    if boot and n >= MIN_MODELS:
        summary = run_bootstrap(stat, n, strata=strata, n_resamples=boot["n_resamples"], seed=boot["seed"],
                                levels=boot["levels"], method=boot["ci_method"], progress=boot["progress"])
    dlo, dhi = stat.data_range
    extrap = bool(not math.isnan(value) and not dlo <= value <= dhi)
    return NcEstimate(scope, estimator, n, n_int, float(value), 10.0 ** value if not math.isnan(value) else nan,
                      reason, g0, a, b, c, [stat.lo, stat.hi], extrap, summary)


def estimate_nc(df: pd.DataFrame, estimator: str = "quadratic", families=None, pooled: bool = False, *,
                b1: str = "HS", b2: str = "TQA", min_delta: float | None = None, units: str = "percent",
                window: tuple[float, float] | None = None, bootstrap: bool = True, n_resamples: int = 10000,
                seed: int = 0, stratify: bool = True, ci_method: str = "percentile",
                levels=DEFAULT_LEVELS, progress: bool = False, attach: str = "larger") -> NcResult:
    """N_c by one estimator, per family (default) or over the pooled families.

    ``window`` (log10 N lo, hi) bounds the quadratic vertex (default: the fitted models' log N range)
    and, when given, the gamma-fit zero crossing too.
    ``stratify`` applies to the pooled bootstrap (per-family bootstraps resample within the family).
    ``attach`` (sign-change only): N_c at the larger model of the interval (default), the smaller, or
    the midpoint.
    """
    check_choice("estimator", estimator, ESTIMATORS)
    check_choice("attach", attach, ATTACH)
    check_pair(df, b1, b2)
    scale = check_units(units)
    min_delta = default_min_delta(units) if min_delta is None else check_finite("min_delta", min_delta, nonneg=True)
    if window is not None:
        if len(window) != 2:
            raise OptionError(f"option 'window': needs two numbers (log10 N lo, hi), got {window!r}")
        window = (check_finite("window", window[0]), check_finite("window", window[1]))
        if not window[0] < window[1]:
            raise OptionError(f"option 'window': lo {window[0]:g} must be below hi {window[1]:g}")
    boot = None
    if bootstrap:
        n_resamples, ci_method, levels = check_boot_options(n_resamples, ci_method, levels)
        boot = dict(n_resamples=n_resamples, seed=int(seed), levels=levels, ci_method=ci_method, progress=progress)
    sub = select_families(df, families)
    sub, dropped = complete_rows(sub, (b1, b2))
    fams = family_order(sub)
    scopes = [("pooled", fams)] if pooled else [(f, [f]) for f in fams]
    estimates = []
    for scope, members in scopes:
        g, fam, logn, v1, v2 = _scope_arrays(sub, members, b1, b2, scale)
        lo, hi = window if window is not None else ((logn.min(), logn.max()) if len(logn) else (math.nan, math.nan))
        stat = NcStatistic(estimator, fam, logn, v1, v2, min_delta, lo, hi, gamma_fit_window=window is not None,
                           attach=attach)
        strata = fam if (pooled and stratify) else None
        estimates.append(_estimate(scope, estimator, stat, strata, boot))
    opts = {"estimator": estimator, "b1": b1, "b2": b2, "pooled": bool(pooled), "units": units,
            "min_delta": min_delta, "window": None if window is None else list(window),
            "families": None if families is None else list(np.atleast_1d(families)),
            "bootstrap": bool(bootstrap)}
    if estimator == "sign-change":
        opts["attach"] = attach
    if boot:
        opts.update(stratify=bool(stratify) if pooled else "within family", ci_method=ci_method,
                    levels=list(levels))
    return NcResult(estimator, b1, b2, bool(pooled), units, min_delta, estimates, dropped,
                    provenance("estimate_nc", opts, {"scores": df}, seed=int(seed) if boot else None,
                               n_resamples=n_resamples if boot else None))
