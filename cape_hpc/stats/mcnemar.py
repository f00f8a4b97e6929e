"""The exact McNemar test of paired binary outcomes (docs/METHODS.md §4.4)."""
from __future__ import annotations

import math

__all__ = ["mcnemar_exact"]


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value of ``b`` and ``c`` discordant pairs (counts): the binomial
    test of b successes in b + c trials at 1/2, p = min(1, 2 P(X <= min(b, c))); 1 when there is no
    discordant pair."""
    b, c = int(b), int(c)
    n = b + c
    if n == 0:
        return 1.0
    m = min(b, c)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(m + 1)) / 2 ** n)
