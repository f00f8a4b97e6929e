"""What the bootstrap engine resamples: a statistic of n units, evaluated on index arrays.

A statistic is either a Python callable ``f(idx: int64[n]) -> float`` (wrapped by
:class:`CallableStatistic`, one resample at a time; NaN or ``numpy.linalg.LinAlgError`` = invalid),
or a :class:`BatchStatistic` evaluating a whole chunk ``idx[R, n]`` at once.  A fused statistic
(``fused = True``) overrides ``stream`` with a kernel that draws its indices while it accumulates
(``cape_kernels.*_boot``), bit-identical to ``batch`` on ``cape_kernels.resample_indices``.  Generic
here: :class:`ParticipationRatioStatistic` (d_eff, docs/METHODS.md §2.5); the N_c statistics live
with their estimators (``cape_hpc.analysis.nc``).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from cape_hpc.errors import DataError, OptionError

__all__ = ["BatchStatistic", "CallableStatistic", "ParticipationRatioStatistic", "as_statistic"]


class BatchStatistic:
    """A statistic evaluated on many resamples at once.

    Subclasses set ``n`` (number of units) and ``name`` and implement ``full()`` (the estimate on
    the original sample) and ``batch(idx[R, m]) -> float64[R]`` (NaN = invalid).  ``jackknife()``
    (leave-one-out values, float64[n], used by BCa) defaults to ``batch`` on the n leave-one-out
    index rows of width n - 1.  ``discrete`` is True when every value is one of finitely many
    observed ones (``summarize`` notes it).
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
        return self.batch(leave_one_out(self.n))

    def stream(self, strata, count: int, seed: int, start: int) -> np.ndarray:
        """Values of resamples start .. start+count-1 of stream ``seed``; the default makes the
        index chunk and calls ``batch``, kernels override it with a fused version."""
        from cape_kernels.resample import resample_indices

        return self.batch(resample_indices(strata, count, seed, n=self.n, start=start))

    def options(self) -> dict[str, Any]:
        return {}


def leave_one_out(n: int) -> np.ndarray:
    """int64[n, n-1]: row i lists 0..n-1 without i."""
    a = np.arange(n, dtype=np.int64)
    return np.stack([np.delete(a, i) for i in range(n)]) if n > 1 else np.empty((n, 0), np.int64)


class ParticipationRatioStatistic(BatchStatistic):
    """d_eff = (tr C)^2 / tr(C^2) of the covariance (ddof=1) or correlation of X's columns."""

    def __init__(self, X, corr: bool = False):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 2 or X.shape[1] < 1:
            raise DataError(f"ParticipationRatioStatistic: X must be [n >= 2, p >= 1], got {X.shape}")
        if not np.all(np.isfinite(X)):
            raise DataError("ParticipationRatioStatistic: X contains NaN or inf")
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


class CallableStatistic(BatchStatistic):
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


def as_statistic(statistic, n: int | None) -> BatchStatistic:
    """``statistic`` as a BatchStatistic over ``n`` units (n defaults to a BatchStatistic's own;
    a callable needs it); DataError when n is not an integer >= 2 or disagrees with the statistic."""
    if isinstance(statistic, BatchStatistic):
        stat = statistic
        n = stat.n if n is None else n
    elif callable(statistic):
        if n is None:
            raise OptionError("bootstrap: n is required with a callable statistic")
        stat = None
    else:
        raise OptionError(f"bootstrap: statistic must be callable or a BatchStatistic, got {type(statistic)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise DataError(f"bootstrap: n must be an integer number of units, got {n!r}")
    if n < 2:
        raise DataError(f"bootstrap: n must be >= 2 units, got {n}")
    if stat is None:
        return CallableStatistic(statistic, int(n))
    if int(n) != stat.n:
        raise DataError(f"bootstrap: n={n} but the statistic has {stat.n} units")
    return stat
