"""Bootstrap engine: plain or stratified resampling, percentile and BCa intervals.

``bootstrap(statistic, n, strata=..., n_resamples=..., seed=..., method=...)`` resamples the n
units (models) with replacement -- within each stratum when ``strata`` is given (family-stratified:
every family keeps its size) -- evaluates the statistic on each resample, drops invalid (NaN)
values and counts them, and reports the full-sample estimate, the median of the valid resamples and
confidence intervals.

Reproducibility: resample r's indices depend only on (seed, r) (``cape_kernels.resample_indices``,
counter-based streams), and each statistic value only on its indices, so the result is bit-identical
for the same seed whatever the number of numba threads or the chunk size.  Indices are made in
chunks of ``chunk`` resamples, so memory stays bounded at 100,000 resamples.

Statistics are either

* a Python callable ``f(idx: int64[n]) -> float`` (NaN = invalid fit; ``numpy.linalg.LinAlgError``
  is also counted as invalid), evaluated one resample at a time (for BCa's jackknife it is also
  called with the n leave-one-out index arrays of length n - 1), or
* a :class:`BatchStatistic` evaluating a whole chunk ``idx[R, n]`` at once (numba kernels of
  ``cape_kernels.resample``): :class:`ParticipationRatioStatistic` (d_eff), :class:`QuadraticNcStatistic`
  and :class:`GammaNcStatistic` (log10 N_c); these use the fused kernels (``cape_kernels.*_boot``)
  that draw the indices while they accumulate, bit-identical to evaluating ``batch`` on
  ``resample_indices``.  ``cape nc`` and ``cape deff`` run exactly these (docs/METHODS.md §2.4, §2.5).

Intervals (``cape_hpc.stats.intervals``, docs/METHODS.md §2.4): percentile, or BCa with the
leave-one-unit-out jackknife over all n units also for a stratified bootstrap (the acceleration is a
skewness correction of the estimator, estimated here ignoring the strata; the usual practical choice,
reported as ``acceleration``).  When every valid value lies on one side of the estimate z0 is
infinite and the BCa interval is NaN (``note`` says so).  :func:`summarize` turns a result into the
:class:`cape_hpc.schema.BootstrapSummary` every analysis keeps, flagging degenerate intervals.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from cape_hpc.errors import OptionError
from cape_hpc.schema import BootstrapSummary, ConfidenceInterval, Provenance, Result
from cape_hpc.stats.intervals import bca_interval, bca_parameters, percentile_interval

__all__ = [
    "bootstrap",
    "BootstrapResult",
    "BatchStatistic",
    "ParticipationRatioStatistic",
    "QuadraticNcStatistic",
    "GammaNcStatistic",
    "summarize",
    "min_valid",
    "DEFAULT_CHUNK",
]

DEFAULT_CHUNK = 4096          # resamples per kernel call when an index chunk is materialised
FUSED_CHUNK = 1 << 16         # ... when the statistic draws its own indices (no index matrix)


# ----------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------
class BatchStatistic:
    """A statistic evaluated on many resamples at once.

    Subclasses set ``n`` (number of units) and ``name`` and implement ``full()`` (the estimate on
    the original sample) and ``batch(idx[R, m]) -> float64[R]`` (NaN = invalid).  ``jackknife()``
    (leave-one-out values, float64[n], used by BCa) defaults to ``batch`` on the n leave-one-out
    index rows of width n - 1.
    """

    n: int
    name: str = "statistic"
    fused: bool = False  # True when ``stream`` draws indices itself (no index matrix in memory)
    discrete: bool = False  # True when every value is one of finitely many observed ones (a sign change)

    def full(self) -> float:
        return float(self.batch(np.arange(self.n, dtype=np.int64)[None, :])[0])

    def batch(self, idx: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def jackknife(self) -> np.ndarray:
        return self.batch(_leave_one_out(self.n))

    def stream(self, strata, count: int, seed: int, start: int) -> np.ndarray:
        """Values of resamples start .. start+count-1 of stream ``seed``; the default makes the
        index chunk and calls ``batch``, kernels override it with a fused version."""
        from cape_kernels.resample import resample_indices

        return self.batch(resample_indices(strata, count, seed, n=self.n, start=start))

    def options(self) -> dict[str, Any]:
        return {}


def _leave_one_out(n: int) -> np.ndarray:
    """int64[n, n-1]: row i lists 0..n-1 without i."""
    a = np.arange(n, dtype=np.int64)
    return np.stack([np.delete(a, i) for i in range(n)]) if n > 1 else np.empty((n, 0), np.int64)


class ParticipationRatioStatistic(BatchStatistic):
    """d_eff = (tr C)^2 / tr(C^2) of the covariance (ddof=1) or correlation of X's columns."""

    def __init__(self, X, corr: bool = False):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 2 or X.shape[1] < 1:
            raise OptionError(f"ParticipationRatioStatistic: X must be [n >= 2, p >= 1], got {X.shape}")
        if not np.all(np.isfinite(X)):
            raise OptionError("ParticipationRatioStatistic: X contains NaN or inf")
        self.X = np.ascontiguousarray(X)
        self.corr = bool(corr)
        self.n = X.shape[0]
        self.name = "participation_ratio_corr" if self.corr else "participation_ratio_cov"
        self.fused = True

    def batch(self, idx):
        from cape_kernels import participation_ratio_batch

        return participation_ratio_batch(self.X, idx, corr=self.corr)

    def stream(self, strata, count, seed, start):
        from cape_kernels import participation_ratio_boot

        return participation_ratio_boot(self.X, strata, count, seed, corr=self.corr, start=start)

    def options(self):
        return {"statistic": "participation_ratio", "matrix": "correlation" if self.corr else "covariance",
                "n": self.n, "p": int(self.X.shape[1])}


class QuadraticNcStatistic(BatchStatistic):
    """log10 N_c = -b / (2a) of the least-squares quadratic y = a x^2 + b x + c (x = log10 N).

    Valid only when a > 0 and lo <= vertex <= hi; the default window is the data's x range.
    """

    def __init__(self, x, y, lo: float | None = None, hi: float | None = None):
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if x.shape != y.shape or x.size < 3:
            raise OptionError(f"QuadraticNcStatistic: x and y must have one length >= 3, got "
                              f"{x.size} and {y.size}")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise OptionError("QuadraticNcStatistic: x or y contains NaN or inf")
        self.x, self.y = np.ascontiguousarray(x), np.ascontiguousarray(y)
        self.lo = float(x.min()) if lo is None else float(lo)
        self.hi = float(x.max()) if hi is None else float(hi)
        if not self.lo <= self.hi:
            raise OptionError(f"QuadraticNcStatistic: window lo={self.lo} > hi={self.hi}")
        self.n = x.size
        self.name = "quadratic_log10_nc"
        self.fused = True

    def batch(self, idx):
        from cape_kernels import quadratic_nc_batch

        return quadratic_nc_batch(self.x, self.y, idx, self.lo, self.hi)

    def stream(self, strata, count, seed, start):
        from cape_kernels import quadratic_nc_boot

        return quadratic_nc_boot(self.x, self.y, strata, count, seed, self.lo, self.hi, start=start)

    def options(self):
        return {"statistic": "quadratic_log10_nc", "window": [self.lo, self.hi], "n": self.n}


class GammaNcStatistic(BatchStatistic):
    """log10 N_c of the ``sign-change`` or ``gamma-fit`` estimator (docs/METHODS.md §2.4) on models
    sorted by (family, N): ``fam`` int codes, ``logn`` = log10 N, ``b1``/``b2`` scores (in the fit's
    units).  Fused kernels ``cape_kernels.gamma_nc_boot`` / ``gamma_nc_batch``; ``lo``/``hi``
    bound a gamma-fit's zero crossing (pass -inf/inf for none); ``attach`` places a sign change."""

    def __init__(self, estimator: str, fam, logn, b1, b2, min_delta: float, lo: float = -math.inf,
                 hi: float = math.inf, attach: str = "larger"):
        from cape_kernels.resample import ATTACH_CODES, GAMMA_NC_ESTIMATORS

        if estimator not in GAMMA_NC_ESTIMATORS:
            raise OptionError(f"option 'estimator': {estimator!r} is not one of {', '.join(GAMMA_NC_ESTIMATORS)}")
        if attach not in ATTACH_CODES:
            raise OptionError(f"option 'attach': {attach!r} is not one of {', '.join(ATTACH_CODES)}")
        self.estimator = estimator
        self.fam = np.ascontiguousarray(fam, dtype=np.int64).reshape(-1)
        self.logn = np.ascontiguousarray(logn, dtype=np.float64).reshape(-1)
        self.b1 = np.ascontiguousarray(b1, dtype=np.float64).reshape(-1)
        self.b2 = np.ascontiguousarray(b2, dtype=np.float64).reshape(-1)
        if not self.fam.shape == self.logn.shape == self.b1.shape == self.b2.shape:
            raise OptionError("GammaNcStatistic: fam, logn, b1 and b2 must have one length")
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


class _CallableStatistic(BatchStatistic):
    """Wraps f(idx[n]) -> float; evaluated one resample at a time."""

    def __init__(self, f: Callable[[np.ndarray], float], n: int):
        self.f = f
        self.n = n
        self.name = getattr(f, "__name__", "callable")

    def _one(self, row):
        try:
            v = self.f(row)
        except np.linalg.LinAlgError:
            return math.nan
        v = float(v)
        return v if math.isfinite(v) else math.nan

    def full(self):
        return self._one(np.arange(self.n, dtype=np.int64))

    def batch(self, idx):
        return np.array([self._one(row) for row in idx], dtype=np.float64)

    def options(self):
        return {"statistic": self.name}


# ----------------------------------------------------------------------------------------------
# result
# ----------------------------------------------------------------------------------------------
@dataclass
class BootstrapResult(Result):
    """Bootstrap of one statistic (the full resample distribution; analyses keep a
    :class:`cape_hpc.schema.BootstrapSummary` of it, made by :func:`summarize`).

    estimate: the statistic on the original sample; median: median of the valid resample values;
    intervals: one ConfidenceInterval per level (in ``levels`` order); n_valid of n_resamples
    resamples gave a valid (finite) value; samples: float64[n_resamples], NaN where invalid
    (resample order, resample r = stream r).
    """

    estimate: float
    median: float
    intervals: list[ConfidenceInterval]
    n_valid: int
    n_resamples: int
    seed: int
    stratified: bool
    method: str
    samples: np.ndarray
    levels: tuple[float, ...] = (0.95, 0.68)
    n_invalid: int = 0
    std_error: float = math.nan
    n_strata: int = 1
    z0: float = math.nan            # BCa bias correction (NaN for percentile)
    acceleration: float = math.nan  # BCa acceleration (NaN for percentile)
    note: str = ""
    provenance: Provenance = field(default_factory=lambda: Provenance(method="bootstrap"))

    @property
    def valid_fraction(self) -> float:
        return self.n_valid / self.n_resamples if self.n_resamples else math.nan

    def interval(self, level: float = 0.95) -> ConfidenceInterval:
        for ci in self.intervals:
            if abs(ci.level - level) < 1e-12:
                return ci
        return ConfidenceInterval.undefined(level)


# the fewest valid resamples whose interval can carry a claim: max(MIN_VALID, MIN_VALID_FRACTION * R)
MIN_VALID = 100
MIN_VALID_FRACTION = 0.01


def min_valid(n_resamples: int) -> int:
    """The stated minimum of valid resamples below which a bootstrap is degenerate:
    max(MIN_VALID, ceil(MIN_VALID_FRACTION * n_resamples)) -- 100 of 10,000, 1,000 of 100,000."""
    return max(MIN_VALID, math.ceil(MIN_VALID_FRACTION * int(n_resamples)))


def summarize(res: BootstrapResult, *, discrete: bool | None = None) -> BootstrapSummary:
    """What an analysis keeps of a bootstrap (the only maker of BootstrapSummary), with its notes
    (docs/METHODS.md §2.4, "Interval notes").

    ``degenerate`` is True, with ``note`` saying why, when no interval is defined, when fewer than
    ``min_valid(n_resamples)`` resamples are valid (``few_valid``), or when an interval has zero
    width (``zero_width``: every valid value inside it equal); the engine's own note (e.g. why BCa
    is undefined) comes first.  Not degenerate but noted: ``estimate_missing`` (the full-sample
    estimate is NaN while resamples gave values -- an interval without its point), ``discrete``
    (the statistic declares that it returns one of finitely many observed values, as the
    sign-change N_c does; ``discrete=`` overrides) and ``valid_share``.  ``extrapolated`` is left
    False: the caller that knows the data's range sets it (``cape_hpc.analysis.nc``).
    """
    reasons = []
    defined = [ci for ci in res.intervals if ci.defined]
    if not defined:
        reasons.append("no interval defined")
    need = min_valid(res.n_resamples)
    few = res.n_valid < need
    if few:
        reasons.append(f"{res.n_valid} valid resamples < minimum {need}")
    zero = any(ci.high == ci.low for ci in defined)
    if zero:
        reasons.append("zero-width interval")
    extra = []
    missing = bool(not math.isfinite(res.estimate) and res.n_valid > 0)
    if missing:
        extra.append("point estimate undefined on the full sample")
    if discrete is None:
        discrete = bool(res.provenance.options.get("discrete", False))
    if discrete:
        extra.append("discrete estimator: resamples can only return observed sizes")
    note = "; ".join([r for r in (res.note, *reasons, *extra) if r])
    share = res.n_valid / res.n_resamples if res.n_resamples else math.nan
    return BootstrapSummary(estimate=float(res.estimate), median=float(res.median),
                            intervals=list(res.intervals), n_valid=int(res.n_valid),
                            n_resamples=int(res.n_resamples), seed=int(res.seed), stratified=bool(res.stratified),
                            method=str(res.method), degenerate=bool(reasons), note=note,
                            valid_share=float(share), zero_width=bool(zero), estimate_missing=missing,
                            extrapolated=False, discrete=bool(discrete), few_valid=bool(few))


# ----------------------------------------------------------------------------------------------
# engine
# ----------------------------------------------------------------------------------------------
def _check_options(n, strata, n_resamples, seed, levels, method, chunk):
    try:
        n = int(n)
    except (TypeError, ValueError):
        raise OptionError(f"bootstrap: n must be an integer, got {n!r}") from None
    if n < 2:
        raise OptionError(f"bootstrap: n must be >= 2 units, got {n}")
    if isinstance(n_resamples, bool) or int(n_resamples) != n_resamples or int(n_resamples) < 1:
        raise OptionError(f"option n_resamples must be a positive integer, got {n_resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2 ** 64:
        raise OptionError(f"option seed must be an integer in [0, 2**64), got {seed!r}")
    levels = tuple(float(v) for v in (levels if np.ndim(levels) else (levels,)))
    if not levels or any(not 0.0 < v < 1.0 for v in levels):
        raise OptionError(f"option levels must lie in (0, 1), got {levels}")
    m = str(method).lower()
    if m not in ("percentile", "bca"):
        raise OptionError(f"option method must be 'percentile' or 'bca', got {method!r}")
    if int(chunk) < 1:
        raise OptionError(f"option chunk must be >= 1, got {chunk}")
    if strata is not None:
        strata = np.asarray(strata)
        if strata.ndim != 1 or strata.size != n:
            raise OptionError(f"option strata must be one label per unit ({n}), got shape {strata.shape}")
        if strata.dtype.kind == "f" and not np.all(np.isfinite(strata)):
            raise OptionError("option strata contains NaN")
        if strata.dtype.kind == "O":
            missing = [i for i, v in enumerate(strata) if v is None or (isinstance(v, float) and v != v)]
            if missing:
                raise OptionError(f"option strata has no label for unit(s) {missing[:5]}")
            strata = strata.astype(str)
    return n, strata, int(n_resamples), int(seed), levels, m, int(chunk)


def bootstrap(statistic, n: int | None = None, *, strata=None, n_resamples: int = 10000,
              seed: int = 0, levels=(0.95, 0.68), method: str = "percentile",
              progress: bool = False, chunk: int | None = None) -> BootstrapResult:
    """Bootstrap ``statistic`` over ``n`` units (models); see the module docstring.

    statistic: a callable f(idx int64[n]) -> float, or a BatchStatistic (then n defaults to its n).
    strata: one label per unit (e.g. family names) for a stratified bootstrap, or None.
    chunk: resamples per kernel call (default DEFAULT_CHUNK, FUSED_CHUNK for fused statistics);
    it bounds memory and sets the progress bar's step, never the result.
    """
    if isinstance(statistic, BatchStatistic):
        stat = statistic
        if n is None:
            n = stat.n
        elif int(n) != stat.n:
            raise OptionError(f"bootstrap: n={n} but the statistic has {stat.n} units")
    elif callable(statistic):
        if n is None:
            raise OptionError("bootstrap: n is required with a callable statistic")
        stat = _CallableStatistic(statistic, int(n))
    else:
        raise OptionError(f"bootstrap: statistic must be callable or a BatchStatistic, got {type(statistic)}")
    if chunk is None:
        chunk = FUSED_CHUNK if getattr(stat, "fused", False) else DEFAULT_CHUNK
    n, strata, R, seed, levels, method, chunk = _check_options(n, strata, n_resamples, seed, levels,
                                                               method, chunk)
    samples = np.empty(R, dtype=np.float64)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=R, desc=f"bootstrap {stat.name}", unit="resample", leave=False)
    try:
        for r0 in range(0, R, chunk):
            c = min(chunk, R - r0)
            samples[r0:r0 + c] = stat.stream(strata, c, seed, r0)
            if bar is not None:
                bar.update(c)
    finally:
        if bar is not None:
            bar.close()
    samples[~np.isfinite(samples)] = np.nan
    valid = samples[np.isfinite(samples)]
    estimate = float(stat.full())
    estimate = estimate if math.isfinite(estimate) else math.nan

    z0 = a = math.nan
    note = ""
    if valid.size == 0:
        note = "no valid resample"
    if method == "percentile":
        intervals = [percentile_interval(valid, lv) for lv in levels]
    else:
        jack = np.asarray(stat.jackknife(), dtype=np.float64)
        z0, a = bca_parameters(valid, estimate, jack)
        intervals = [bca_interval(valid, estimate, jack, lv) for lv in levels]
        if valid.size and not math.isfinite(z0):
            note = "BCa undefined: every valid resample lies on one side of the estimate"
        elif valid.size and not math.isfinite(a):
            note = "BCa undefined: fewer than 3 valid jackknife values"

    n_strata = 1 if strata is None else int(np.unique(strata).size)
    options = {"method": method, "levels": list(levels), "stratified": strata is not None,
               "n_strata": n_strata, "streams": "splitmix64(seed, resample)"}
    options.update(stat.options())
    if stat.discrete:
        options["discrete"] = True
    return BootstrapResult(
        estimate=estimate,
        median=float(np.median(valid)) if valid.size else math.nan,
        intervals=intervals,
        n_valid=int(valid.size),
        n_resamples=R,
        seed=seed,
        stratified=strata is not None,
        method=method,
        samples=samples,
        levels=levels,
        n_invalid=int(R - valid.size),
        std_error=float(np.std(valid, ddof=1)) if valid.size > 1 else math.nan,
        n_strata=n_strata,
        z0=z0,
        acceleration=a,
        note=note,
        provenance=Provenance(method=f"bootstrap-{method}", options=options, seed=seed, n_resamples=R),
    )
