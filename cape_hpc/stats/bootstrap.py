"""Bootstrap engine: plain or stratified resampling, percentile and BCa intervals.

``bootstrap(statistic, opts, n=..., strata=...)`` resamples the n units (models) with replacement
-- within each stratum when ``strata`` is given and ``opts.stratify`` (family-stratified: every
family keeps its size) -- evaluates the statistic on each resample, drops invalid (NaN) values and
counts them, and reports the full-sample estimate, the median of the valid resamples and confidence
intervals.  ``opts`` is a :class:`cape_hpc.stats.BootstrapOptions` (resamples, seed, interval
method, levels), validated there; bad data (n < 2 units, strata of the wrong length or with a
missing label) raises :class:`cape_hpc.errors.DataError`.

Reproducibility: resample r's indices depend only on (seed, r) (``cape_kernels.resample_indices``,
counter-based streams), and each statistic value only on its indices, so the result is bit-identical
for the same seed whatever the number of numba threads or the chunk size.  Indices are made in
chunks of ``chunk`` resamples, so memory stays bounded at 100,000 resamples.

Statistics (``cape_hpc.stats.statistics``): a Python callable ``f(idx: int64[n]) -> float``
(NaN = invalid fit; ``numpy.linalg.LinAlgError`` is also counted as invalid), evaluated one
resample at a time (for BCa's jackknife it is also called with the n leave-one-out index arrays of
length n - 1), or a :class:`BatchStatistic` evaluating a whole chunk ``idx[R, n]`` at once, fused
ones drawing their own indices (``cape nc`` and ``cape deff`` run these, docs/METHODS.md §2.4, §2.5).

Intervals (``cape_hpc.stats.intervals``, docs/METHODS.md §2.4): percentile, or BCa with the
leave-one-unit-out jackknife over all n units also for a stratified bootstrap (the acceleration is a
skewness correction of the estimator, estimated here ignoring the strata; the usual practical choice,
reported as ``acceleration``).  When every valid value lies on one side of the estimate z0 is
infinite and the BCa interval is NaN (``note`` says so).  ``cape_hpc.stats.summarize`` turns a
result into the :class:`cape_hpc.schema.BootstrapSummary` every analysis keeps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cape_hpc import progress
from cape_hpc.errors import DataError, OptionError
from cape_hpc.schema import ConfidenceInterval, Provenance, Result
from cape_hpc.stats.intervals import bca_interval, bca_parameters, percentile_interval
from cape_hpc.stats.options import BootstrapOptions
from cape_hpc.stats.statistics import BatchStatistic, as_statistic

__all__ = ["bootstrap", "BootstrapResult", "DEFAULT_CHUNK", "FUSED_CHUNK"]

DEFAULT_CHUNK = 4096          # resamples per kernel call when an index chunk is materialised
FUSED_CHUNK = 1 << 16         # ... when the statistic draws its own indices (no index matrix)


@dataclass
class BootstrapResult(Result):
    """Bootstrap of one statistic (the full resample distribution; analyses keep a
    :class:`cape_hpc.schema.BootstrapSummary` of it, made by ``cape_hpc.stats.summarize``).

    estimate: the statistic on the original sample; median: median of the valid resample values;
    intervals: one ConfidenceInterval per level (in ``levels`` order); n_valid of n_resamples
    resamples gave a valid (finite) value; samples: float64[n_resamples], NaN where invalid
    (resample order, resample r = stream r); discrete: the statistic returns one of finitely many
    observed values.
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
    discrete: bool = False
    provenance: Provenance = field(default_factory=lambda: Provenance(method="bootstrap"))

    @property
    def valid_fraction(self) -> float:
        return self.n_valid / self.n_resamples if self.n_resamples else math.nan

    def interval(self, level: float = 0.95) -> ConfidenceInterval:
        for ci in self.intervals:
            if abs(ci.level - level) < 1e-12:
                return ci
        return ConfidenceInterval.undefined(level)


def _strata_labels(strata, n: int) -> np.ndarray:
    """``strata`` as one label per unit (object labels as str); DataError when it does not fit."""
    strata = np.asarray(strata)
    if strata.ndim != 1 or strata.size != n:
        raise DataError(f"bootstrap strata: need one label per unit ({n}), got shape {strata.shape}")
    if strata.dtype.kind == "f" and not np.all(np.isfinite(strata)):
        raise DataError("bootstrap strata: a label is NaN")
    if strata.dtype.kind == "O":
        missing = [i for i, v in enumerate(strata) if v is None or (isinstance(v, float) and v != v)]
        if missing:
            raise DataError(f"bootstrap strata: no label for unit(s) {missing[:5]}")
        strata = strata.astype(str)
    return strata


def _draw(stat: BatchStatistic, strata, n_resamples: int, seed: int, chunk: int) -> np.ndarray:
    """float64[n_resamples]: the statistic on resamples 0 .. n_resamples-1 (NaN where invalid); the
    chunks advance a ``cape_hpc.progress`` task (shown when the CLI installed a display)."""
    samples = np.empty(n_resamples, dtype=np.float64)
    with progress.task(f"bootstrap {stat.name}", total=n_resamples, unit="resample") as advance:
        for r0 in range(0, n_resamples, chunk):
            c = min(chunk, n_resamples - r0)
            samples[r0:r0 + c] = stat.stream(strata, c, seed, r0)
            advance(c)
    samples[~np.isfinite(samples)] = np.nan
    return samples


def _intervals(stat: BatchStatistic, valid: np.ndarray, estimate: float, opts: BootstrapOptions):
    """(intervals, z0, acceleration, note) of the valid resample values by ``opts.ci_method``."""
    note = "no valid resample" if valid.size == 0 else ""
    if opts.ci_method == "percentile":
        return [percentile_interval(valid, lv) for lv in opts.levels], math.nan, math.nan, note
    jack = np.asarray(stat.jackknife(), dtype=np.float64)
    z0, a = bca_parameters(valid, estimate, jack)
    intervals = [bca_interval(valid, estimate, jack, lv) for lv in opts.levels]
    if valid.size and not math.isfinite(z0):
        note = "BCa undefined: every valid resample lies on one side of the estimate"
    elif valid.size and not math.isfinite(a):
        note = "BCa undefined: fewer than 3 valid jackknife values"
    return intervals, z0, a, note


def bootstrap(statistic, opts: BootstrapOptions | None = None, *, n: int | None = None, strata=None,
              chunk: int | None = None) -> BootstrapResult:
    """Bootstrap ``statistic`` over ``n`` units (models) with ``opts``; see the module docstring.

    statistic: a callable f(idx int64[n]) -> float, or a BatchStatistic (then n defaults to its n).
    strata: one label per unit (e.g. family names), used when ``opts.stratify``; None: unstratified.
    chunk: resamples per kernel call (default DEFAULT_CHUNK, FUSED_CHUNK for fused statistics);
    it bounds memory and sets the progress task's step (``cape_hpc.progress``), never the result.
    """
    opts = BootstrapOptions() if opts is None else opts
    if not isinstance(opts, BootstrapOptions):
        raise OptionError(f"bootstrap: opts must be BootstrapOptions, got {type(opts).__name__}")
    stat = as_statistic(statistic, n)
    chunk = (FUSED_CHUNK if stat.fused else DEFAULT_CHUNK) if chunk is None else int(chunk)
    if chunk < 1:
        raise OptionError(f"bootstrap: chunk must be >= 1, got {chunk}")
    strata = _strata_labels(strata, stat.n) if strata is not None and opts.stratify else None
    R, seed = opts.n_resamples, opts.seed
    samples = _draw(stat, strata, R, seed, chunk)
    valid = samples[np.isfinite(samples)]
    estimate = float(stat.full())
    estimate = estimate if math.isfinite(estimate) else math.nan
    intervals, z0, a, note = _intervals(stat, valid, estimate, opts)
    n_strata = 1 if strata is None else int(np.unique(strata).size)
    options = {"method": opts.ci_method, "levels": list(opts.levels), "stratified": strata is not None,
               "n_strata": n_strata, "streams": "splitmix64(seed, resample)", **stat.options()}
    return BootstrapResult(
        estimate=estimate, median=float(np.median(valid)) if valid.size else math.nan, intervals=intervals,
        n_valid=int(valid.size), n_resamples=R, seed=seed, stratified=strata is not None, method=opts.ci_method,
        samples=samples, levels=opts.levels, n_invalid=int(R - valid.size),
        std_error=float(np.std(valid, ddof=1)) if valid.size > 1 else math.nan, n_strata=n_strata, z0=z0,
        acceleration=a, note=note, discrete=bool(stat.discrete),
        provenance=Provenance(method=f"bootstrap-{opts.ci_method}", options=options, seed=seed, n_resamples=R))
