"""Confidence intervals: each rule exists once, here (METHODS.md §2.4, §4).

``wilson_interval`` (a binomial proportion), and the bootstrap's percentile and BCa rules.
All return :class:`cape_hpc.schema.ConfidenceInterval`.
"""
from __future__ import annotations

import math

from scipy.special import ndtri

from cape_hpc.errors import OptionError
from cape_hpc.schema import ConfidenceInterval

__all__ = ["wilson_interval"]


def wilson_interval(k: int, n: int, level: float = 0.95) -> ConfidenceInterval:
    """Wilson score interval of a proportion k / n at ``level`` (NaN bounds when n == 0).

    centre = (p + z^2 / 2n) / (1 + z^2 / n), half-width = z sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n),
    with z = Phi^-1((1 + level) / 2).
    """
    if not 0.0 < level < 1.0:
        raise OptionError(f"option 'level': must lie in (0, 1), got {level!r}")
    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= max(n, 0):
        raise OptionError(f"wilson_interval: need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return ConfidenceInterval.undefined(level)
    z = float(ndtri((1.0 + level) / 2.0))
    p = k / n
    den = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / den
    return ConfidenceInterval(max(0.0, centre - half), min(1.0, centre + half), float(level))
