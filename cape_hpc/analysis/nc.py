"""Critical scale N_c (docs/METHODS.md §2.4): three named estimators, per family or pooled, with a bootstrap.

Estimators (x = log10 N; results are reported as log10 N_c and N_c):

``sign-change``
    Walk the defined gammas (the gamma rule of docs/METHODS.md §2.1) in order of N; N_c is the N of
    the model whose gamma is the first positive one after a negative one (``attach='larger'``: the
    gamma is attached to the larger model).  ``attach='smaller'`` reports the smaller model of that
    interval, ``attach='midpoint'`` its midpoint 10**x_mid.  Choices where the definition is silent:
    undefined intervals and gamma == 0 exactly are skipped (they neither break nor make a change);
    pooled over several families, the intervals of all families (each computed within its family) are
    merged in order of their midpoint x (ties keep family order) and the same rule is applied.  No
    change gives NaN with a reason (all positive: N_c at or below the smallest model; all negative:
    above the largest).
``gamma-fit``
    Least squares gamma = g0 * (x_mid - log N_c) over the defined intervals (a line in x_mid);
    log N_c = -intercept / slope.  Valid only when g0 > 0 (gamma rises through zero, the tax-to-bonus
    direction that defines N_c) and there are >= 2 intervals with distinct x_mid.  The zero crossing
    may lie far outside the data (a shallow line): it is then flagged ``extrapolated``, and an
    explicit ``window`` makes such fits invalid, as for the quadratic.  The data of a gamma-fit are
    the gamma midpoints, so its range (``fit_range``) is [min x_mid, max x_mid], narrower than the
    models' log N range.
``quadratic``
    B2 = a x^2 + b x + c over the models; log N_c = -b / (2a), valid only when a > 0 and the vertex
    lies inside the window (default: the log N range of the models fitted; the same window is kept
    for every bootstrap resample).

Bootstrap: models are resampled with replacement (per family: within the family; pooled: within each
family when ``stratify`` else across all), the estimator is refitted and invalid fits (NaN) are
dropped; the median, the percentile (or BCa) intervals, the count of valid resamples and the seed are
reported (``cape_hpc.stats.summarize``), with the interval notes of docs/METHODS.md §2.4 ("Interval
notes"); this module sets the one that needs the data's range: ``extrapolated`` when the point or a
bound of the 95% interval lies outside ``fit_range`` (the gamma midpoints' range for the gamma-fit,
the models' log N range otherwise).  Resampled duplicates of a model have equal N, so the
interval between them is undefined and skipped.  Every estimator runs on the fused kernels of
``cape_kernels.resample`` (``gamma_nc_boot``, ``quadratic_nc_boot``: indices drawn while the fit
accumulates, no index matrix), the same code for the full-sample value; each resample depends only on
(seed, resample number), so results do not depend on the thread count.  The quadratic's kernels
have two backends with the same bits, numba and numpy (``cape_kernels.numpy_resample``):
``resample_kernels`` picks numpy when this process has not imported numba and the bootstrap draws
at most ``NUMPY_MAX_DRAWS`` rows (a new `cape nc` process is then done before numba would have
loaded), numba otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from cape_kernels.numpy_resample import resample_kernels

from cape_hpc.analysis._common import check_pair, complete_rows, family_order, provenance, select_families
from cape_hpc.analysis.options import NcOptions
from cape_hpc.analysis.scale import SCALE, axis_of, on_scale
from cape_hpc.errors import DataError, OptionError
from cape_hpc.schema import BootstrapSummary, Provenance, Result
from cape_hpc.stats import BatchStatistic, BootstrapOptions, bootstrap, note_extrapolation, summarize

if TYPE_CHECKING:  # annotations only: the table may be a pandas DataFrame
    import pandas as pd

    from cape_hpc.io.scores import ScoreColumns

MIN_MODELS = 3


@dataclass
class NcEstimate:
    scope: str                 # family name, or 'pooled'
    estimator: str
    n_models: int
    n_intervals: int           # defined gamma intervals (all estimators; used by sign-change, gamma-fit)
    log10_nc: float            # NaN when invalid
    nc: float                  # 10 ** log10_nc (parameters)
    reason: str                # why invalid ('' when valid)
    g0: float                  # gamma-fit slope (NaN otherwise)
    a: float                   # quadratic coefficients (NaN otherwise)
    b: float
    c: float
    window: list[float]        # validity window in log10 N (quadratic; gamma-fit only when given)
    extrapolated: bool         # log10_nc lies outside fit_range
    bootstrap: BootstrapSummary  # log10 N_c distribution (BootstrapSummary.empty when not run)
    fit_range: list[float]     # log10 N range of the data the estimator fits (gamma-fit: the gamma midpoints)


@dataclass
class NcResult(Result):
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


class QuadraticNcStatistic(BatchStatistic):
    """log10 N_c = -b / (2a) of the least-squares quadratic y = a x^2 + b x + c (x = log10 N).

    Valid only when a > 0 and lo <= vertex <= hi; the default window is the data's x range.  Fused
    kernels ``quadratic_nc_boot`` / ``quadratic_nc_batch`` of ``kernels`` (a backend module,
    ``cape_kernels.numpy_resample.resample_kernels``; default numba's ``cape_kernels.resample``).
    """

    def __init__(self, x, y, lo: float | None = None, hi: float | None = None, kernels: ModuleType | None = None):
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if x.shape != y.shape or x.size < 3:
            raise DataError(f"QuadraticNcStatistic: x and y must have one length >= 3, got {x.size} and {y.size}")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise DataError("QuadraticNcStatistic: x or y contains NaN or inf")
        self.x, self.y = np.ascontiguousarray(x), np.ascontiguousarray(y)
        self.lo = float(x.min()) if lo is None else float(lo)
        self.hi = float(x.max()) if hi is None else float(hi)
        if not self.lo <= self.hi:
            raise OptionError(f"option '--window': lo {self.lo:g} > hi {self.hi:g}")
        self.n = x.size
        self.name = "quadratic_log10_nc"
        self.fused = True
        self.kernels = resample_kernels(math.inf) if kernels is None else kernels

    def batch(self, idx):
        return self.kernels.quadratic_nc_batch(self.x, self.y, idx, self.lo, self.hi)

    def stream(self, strata, count, seed, start):
        return self.kernels.quadratic_nc_boot(self.x, self.y, strata, count, seed, self.lo, self.hi, start=start)

    def options(self):
        return {"statistic": "quadratic_log10_nc", "window": [self.lo, self.hi], "n": self.n}


class GammaNcStatistic(BatchStatistic):
    """log10 N_c of the ``sign-change`` or ``gamma-fit`` estimator (module doc) on models sorted by
    (family, N): ``fam`` int codes, ``logn`` = log10 N, ``b1``/``b2`` scores (in the fit's units).
    Fused kernels ``cape_kernels.gamma_nc_boot`` / ``gamma_nc_batch``; ``lo``/``hi`` bound a
    gamma-fit's zero crossing (pass -inf/inf for none); ``attach`` places a sign change.  ``estimator``
    and ``attach`` are checked by ``NcOptions`` (and by the kernels, ValueError)."""

    def __init__(self, estimator: str, fam, logn, b1, b2, min_delta: float, lo: float = -math.inf,
                 hi: float = math.inf, attach: str = "larger"):
        self.estimator = estimator
        self.fam = np.ascontiguousarray(fam, dtype=np.int64).reshape(-1)
        self.logn = np.ascontiguousarray(logn, dtype=np.float64).reshape(-1)
        self.b1 = np.ascontiguousarray(b1, dtype=np.float64).reshape(-1)
        self.b2 = np.ascontiguousarray(b2, dtype=np.float64).reshape(-1)
        if not self.fam.shape == self.logn.shape == self.b1.shape == self.b2.shape:
            raise DataError("GammaNcStatistic: fam, logn, b1 and b2 must have one length")
        self.min_delta = float(min_delta)
        self.lo, self.hi = float(lo), float(hi)
        self.attach = attach
        self.n = self.logn.size
        self.name = f"nc_{estimator}"
        self.fused = True
        # a sign change returns the log10 N of an observed model (or an observed midpoint): discrete
        self.discrete = estimator == "sign-change"

    def batch(self, idx):
        from cape_kernels import gamma_nc_batch

        return gamma_nc_batch(self.estimator, self.fam, self.logn, self.b1, self.b2, idx, self.min_delta,
                              self.lo, self.hi, self.attach)

    def stream(self, strata, count, seed, start):
        from cape_kernels import gamma_nc_boot

        return gamma_nc_boot(self.estimator, self.fam, self.logn, self.b1, self.b2, strata, count, seed,
                             self.min_delta, self.lo, self.hi, self.attach, start=start)

    def options(self):
        out = {"statistic": f"{self.estimator}_log10_nc", "min_delta": self.min_delta, "n": self.n}
        if self.estimator == "gamma-fit":
            out["window"] = [self.lo, self.hi]
        else:
            out["attach"] = self.attach
        return out


def _scope_arrays(sub: pd.DataFrame, fams: list[str], b1: str, b2: str, scale: float, column: str = "params"):
    """(rows, family codes, log10 N, B1, B2) of the scope's models (``sub``: a DataFrame or a
    ``cape_hpc.io.scores.ScoreColumns``) sorted by (family in ``fams`` order, N, name); one stable sort (the order of ``sort_by_n`` within each family); N is the
    ``column`` (``SCALE``: N or the step, ``cape_hpc.analysis.scale``)."""
    fam = np.asarray(sub["family"], dtype=object)
    code = {f: i for i, f in enumerate(fams)}
    all_codes = np.fromiter((code.get(f, -1) for f in fam), dtype=np.int64, count=len(fam))  # one dict lookup
    keep = np.flatnonzero(all_codes >= 0)  # per row (np.isin on text loops over the families: rows x families)
    codes = all_codes[keep]
    n = np.asarray(sub[column], dtype=float)
    names = np.array([str(m) for m in sub["model"]], dtype=object)
    perm = np.lexsort((names[keep], n[keep], codes))
    order = keep[perm]
    return (sub.take(order), codes[perm], np.log10(n[order]),
            np.asarray(sub[b1], dtype=float)[order] * scale, np.asarray(sub[b2], dtype=float)[order] * scale)


def _pow10(x: float) -> float:
    """10 ** x; inf beyond the largest float (an extrapolated N_c of a huge-N table), NaN for NaN."""
    return math.nan if math.isnan(x) else 10.0 ** x if x < 308.0 else math.inf


def _no_change_reason(gs: np.ndarray) -> str:
    gs = gs[gs != 0]
    if len(gs) == 0:
        return "no defined nonzero gamma"
    if (gs > 0).all():
        return "gamma positive at every interval: N_c at or below the smallest model"
    if (gs < 0).all():
        return "gamma negative at every interval: N_c above the largest model"
    return "no negative-to-positive change of gamma"


def _kernels(opts: NcOptions, n: int) -> ModuleType:
    """The resampling backend of one estimate (same bits either way): by the rows its bootstrap
    draws for the quadratic (``resample_kernels``); numba for the gamma estimators."""
    draws = opts.n_resamples * n if opts.bootstrap else 0
    return resample_kernels(draws if opts.estimator == "quadratic" else math.inf)


def _statistic(opts: NcOptions, fam, logn, v1, v2, min_delta, lo, hi, kernels: ModuleType | None = None):
    if opts.estimator == "quadratic":
        return QuadraticNcStatistic(logn, v2, lo, hi, kernels)
    glo, ghi = (lo, hi) if opts.window is not None else (-math.inf, math.inf)  # gamma-fit: window only if given
    return GammaNcStatistic(opts.estimator, fam, logn, v1, v2, min_delta, glo, ghi, opts.attach)


def _estimate(scope: str, opts: NcOptions, fam, logn, v1, v2, min_delta: float, lo: float, hi: float) -> NcEstimate:
    nan = math.nan
    n = len(logn)
    estimator = opts.estimator
    K = _kernels(opts, n)
    xs, gs = K.nc_intervals(fam, logn, v1, v2, min_delta)
    g0 = a = b = c = nan
    reason = ""
    stat = None
    if n < MIN_MODELS:
        value, reason = nan, f"{n} model(s) < {MIN_MODELS}"
    else:
        stat = _statistic(opts, fam, logn, v1, v2, min_delta, lo, hi, K)
        if estimator == "quadratic":
            if len(set(logn.tolist())) < 3:   # distinct N (finite here; np.unique of floats imports numpy.ma)
                value, reason = nan, "fewer than 3 distinct N"
            else:
                # the vertex and its validity: the kernel's solve (as for every resample); the reported
                # coefficients in x: numpy's least squares (polyfit), which they have always been
                xv, ka, _, _ = K.quadratic_fit(logn, v2)
                a, b, c = (float(v) for v in np.polyfit(logn, v2, 2))
                value = stat.full()
                if math.isnan(value):
                    reason = (f"a = {ka:.4g} <= 0 (no minimum)" if not ka > 0 else
                              f"vertex log10 {axis_of(opts).symbol} = {xv:.3f} outside window [{lo:.3f}, {hi:.3f}]")
        else:
            value = stat.full()
            if estimator == "gamma-fit":
                g0 = K.gamma_line(xs, gs)[0]
                if math.isnan(value):
                    reason = (f"{len(xs)} defined interval(s) < 2" if len(xs) < 2 else
                              f"g0 = {g0:.4g} <= 0 (gamma does not rise through zero)" if not g0 > 0 else
                              f"zero crossing outside window [{lo:.3f}, {hi:.3f}]")
            elif math.isnan(value):
                reason = _no_change_reason(gs)
    summary = BootstrapSummary.empty(opts.levels if opts.bootstrap else BootstrapOptions().levels)
    if opts.bootstrap and stat is not None:
        summary = summarize(bootstrap(stat, opts, n=n, strata=fam if opts.pooled else None))
    if estimator == "gamma-fit":
        rlo, rhi = (float(np.min(xs)), float(np.max(xs))) if len(xs) else (nan, nan)
    else:
        rlo, rhi = (float(logn.min()), float(logn.max())) if n else (nan, nan)
    extrap = bool(not math.isnan(value) and not rlo <= value <= rhi)
    summary = note_fit_range(summary, rlo, rhi, estimator, opts.scale_axis)
    return NcEstimate(scope, estimator, n, len(xs), float(value), _pow10(value),
                      reason, float(g0), float(a), float(b), float(c), [float(lo), float(hi)], extrap, summary,
                      [rlo, rhi])


def note_fit_range(summary: BootstrapSummary, rlo: float, rhi: float, estimator: str,
                   scale_axis: str = "params") -> BootstrapSummary:
    """``summary`` of a log10 N_c bootstrap with the ``extrapolated`` note (``cape_hpc.stats.note_extrapolation``)
    when its point or a 95% bound lies outside the fit range [rlo, rhi] (log10 N of the gamma midpoints
    for the gamma-fit, of the models otherwise; N the training step under ``scale_axis='step'``)."""
    what = "the gamma midpoints" if estimator == "gamma-fit" else "the models"
    ax = axis_of(scale_axis)
    where = (f"log10 {ax.symbol} [{rlo:.3f}, {rhi:.3f}] of {what} "
             f"({ax.symbol} {ax.text(_pow10(rlo))} to {ax.text(_pow10(rhi))})")
    return note_extrapolation(summary, rlo, rhi, where)


def estimate_nc(df: pd.DataFrame | ScoreColumns, opts: NcOptions | None = None) -> NcResult:
    """N_c by ``opts.estimator``, per family (default) or over the pooled families (``opts.pooled``).
    ``df``: the score table, a DataFrame or (pandas-free) ``cape_hpc.io.scores.ScoreColumns``.

    ``opts.window`` (log10 N lo, hi) bounds the quadratic vertex (default: the fitted models' log N
    range) and, when given, the gamma-fit zero crossing too.  See the module doc.
    """
    opts = NcOptions() if opts is None else opts
    if not isinstance(opts, NcOptions):
        raise OptionError(f"estimate_nc: opts must be NcOptions, got {type(opts).__name__}")
    b1, b2 = opts.b1, opts.b2
    check_pair(df, b1, b2)
    min_delta = opts.min_delta_resolved
    sub = on_scale(select_families(df, opts.families), opts)   # N, or the step under --scale step
    sub, dropped = complete_rows(sub, (b1, b2))
    fams = family_order(sub)
    # the table is grouped once (one sort by family, N, name); each family is a slice of it
    _, codes, logn_all, v1_all, v2_all = _scope_arrays(sub, fams, b1, b2, opts.scale, SCALE)
    bounds = np.searchsorted(codes, np.arange(len(fams) + 1))
    scopes = [("pooled", slice(None))] if opts.pooled else [(f, slice(bounds[i], bounds[i + 1]))
                                                            for i, f in enumerate(fams)]
    estimates = []
    for scope, rows in scopes:
        logn, v1, v2 = logn_all[rows], v1_all[rows], v2_all[rows]
        fam = codes[rows] if opts.pooled else np.zeros(len(logn), dtype=np.int64)
        if opts.window is not None:
            lo, hi = opts.window
        else:
            lo, hi = (logn.min(), logn.max()) if len(logn) else (math.nan, math.nan)
        estimates.append(_estimate(scope, opts, fam, logn, v1, v2, min_delta, float(lo), float(hi)))
    boot = opts.bootstrap
    return NcResult(opts.estimator, b1, b2, bool(opts.pooled), opts.units, min_delta, estimates, dropped,
                    provenance("estimate_nc", opts, {"scores": df}, seed=opts.seed if boot else None,
                               n_resamples=opts.n_resamples if boot else None))
