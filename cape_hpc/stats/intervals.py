"""Confidence intervals: each rule exists once, here (docs/METHODS.md §2.4, §4).

``wilson_interval`` (a binomial proportion), and the bootstrap's percentile and BCa rules.
All return :class:`cape_hpc.schema.ConfidenceInterval`.

``percentile``: the (1 - level)/2 and (1 + level)/2 quantiles (linear interpolation, as numpy and
scipy) of the valid resample values.

``bca`` (Efron & Tibshirani 1993, 14.3): z0 = Phi^-1(fraction of valid values below the estimate,
ties counted one half, as scipy), acceleration a from the jackknife (leave one unit out; invalid
jackknife values are dropped), interval = the quantiles at Phi(z0 + (z0 + z)/(1 - a (z0 + z))) for
z = Phi^-1((1 -+ level)/2).  Undefined (NaN bounds) when z0 or a cannot be estimated.
"""
from __future__ import annotations

import math

import numpy as np

from cape_hpc.errors import OptionError
from cape_hpc.schema import ConfidenceInterval

__all__ = ["wilson_interval", "percentile_interval", "percentile_intervals", "bca_interval", "bca_parameters"]


def _check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise OptionError(f"option 'level': must lie in (0, 1), got {level!r}")
    return level


def wilson_interval(k: int, n: int, level: float = 0.95) -> ConfidenceInterval:
    """Wilson score interval of a proportion k / n at ``level`` (NaN bounds when n == 0).

    centre = (p + z^2 / 2n) / (1 + z^2 / n), half-width = z sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n),
    with z = Phi^-1((1 + level) / 2).
    """
    level = _check_level(level)
    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= max(n, 0):
        raise OptionError(f"wilson_interval: need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return ConfidenceInterval.undefined(level)
    from scipy.special import ndtri  # scipy.special where it is used: a new `cape` process starts without it

    z = float(ndtri((1.0 + level) / 2.0))
    p = k / n
    den = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / den
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact bounds at k = 0 and k = n (no rounding residue)
    high = 1.0 if k == n else min(1.0, centre + half)
    return ConfidenceInterval(low, high, level)


def percentile_interval(valid: np.ndarray, level: float) -> ConfidenceInterval:
    """Percentile interval of the valid (finite) resample values (NaN bounds when there are none)."""
    level = _check_level(level)
    valid = np.asarray(valid, dtype=np.float64)
    if valid.size == 0:
        return ConfidenceInterval.undefined(level)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(valid, [a, 1.0 - a])
    return ConfidenceInterval(float(lo), float(hi), level)


def percentile_intervals(samples: np.ndarray, level: float) -> list[ConfidenceInterval]:
    """:func:`percentile_interval` of each column of ``samples`` [R, k] (NaN / inf = invalid): the
    columns without an invalid value through one quantile call, the others one by one."""
    level = _check_level(level)
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 2:
        raise ValueError(f"percentile_intervals: samples must be [R, k], got shape {samples.shape}")
    ok = np.isfinite(samples)
    whole = ok.all(axis=0) & (samples.shape[0] > 0)
    out: list = [None] * samples.shape[1]
    if whole.any():
        a = (1.0 - level) / 2.0
        q = np.quantile(samples[:, whole], [a, 1.0 - a], axis=0)
        for j, lo, hi in zip(np.flatnonzero(whole), q[0], q[1]):
            out[j] = ConfidenceInterval(float(lo), float(hi), level)
    for j in np.flatnonzero(~whole):
        out[j] = percentile_interval(samples[ok[:, j], j], level)
    return out


def _acceleration(jack: np.ndarray) -> float:
    jack = jack[np.isfinite(jack)]
    if jack.size < 3:
        return math.nan
    d = jack.mean() - jack
    den = np.sum(d * d)
    if den <= 0:
        return 0.0
    return float(np.sum(d ** 3) / (6.0 * den ** 1.5))


def bca_parameters(valid: np.ndarray, estimate: float, jack: np.ndarray) -> tuple[float, float]:
    """(z0, a): BCa bias correction and acceleration (NaN when they cannot be estimated)."""
    valid = np.asarray(valid, dtype=np.float64)
    if valid.size == 0 or not math.isfinite(estimate):
        return math.nan, math.nan
    from scipy.special import ndtri

    frac = (np.count_nonzero(valid < estimate) + np.count_nonzero(valid <= estimate)) / (2.0 * valid.size)
    return float(ndtri(frac)), _acceleration(np.asarray(jack, dtype=np.float64))


def bca_interval(valid: np.ndarray, estimate: float, jack: np.ndarray, level: float) -> ConfidenceInterval:
    """BCa interval of the valid resample values (NaN bounds when z0 or a is undefined)."""
    level = _check_level(level)
    valid = np.asarray(valid, dtype=np.float64)
    z0, a = bca_parameters(valid, estimate, jack)
    if not (math.isfinite(z0) and math.isfinite(a)):
        return ConfidenceInterval.undefined(level)
    from scipy.special import ndtr, ndtri

    qs = []
    for z in (float(ndtri((1.0 - level) / 2.0)), float(ndtri((1.0 + level) / 2.0))):
        num = z0 + z
        qs.append(float(ndtr(z0 + num / (1.0 - a * num))))
    lo, hi = np.quantile(valid, qs)
    return ConfidenceInterval(float(lo), float(hi), level)
