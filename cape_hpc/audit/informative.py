"""Vacuous-pass checks: when a match holds but says little (docs/METHODS.md §2.15, "Not informative").

A computation records what a null would give (``AuditContext.fact``) beside its value; a match
whose facts fail one of these checks becomes "holds but not informative", with the reason named:

``null``
    a sign or order that also appears under the claim's null: a sign flip after width
    normalisation that appears under at least :data:`NULL_SHARE` of random width orderings
    (fact ``null_share``: (what, share));
``difference``
    an ordering of two estimates whose difference has a 95% interval spanning 0 (fact
    ``difference``: (what, low, high));
``base_rate``
    "the named models lie above" when a random draw of as many models from the table would all lie
    above with probability >= :data:`BASE_P` (fact ``base_rate``: (what, k named, n above, n));
``near_determined``
    a fit with fewer than 2 residual degrees of freedom (fact ``determined``; none at all is
    degenerate, ``cape_hpc.audit.degeneracy``);
``band``
    a sign change that rests on a gamma inside the transition band of ``cape_hpc.analysis.phases``
    (fact ``in_band``: (what, gamma, low, high)).
"""
from __future__ import annotations

from math import comb
from typing import Any

__all__ = ["NULL_SHARE", "BASE_P", "reasons", "p_all_above"]

NULL_SHARE = 0.95
BASE_P = 0.05


def p_all_above(k: int, n_above: int, n: int) -> float:
    """Probability that k models drawn without replacement from n, of which n_above lie above, all
    lie above (hypergeometric)."""
    if k > n_above or n <= 0:
        return 0.0
    return comb(n_above, k) / comb(n, k)


def reasons(facts: list[tuple[str, Any]]) -> list[str]:
    """Why a match of these facts is not informative (empty: it is)."""
    out: list[str] = []
    for kind, v in facts:
        if kind == "null_share":
            what, share = v
            if share >= NULL_SHARE:
                out.append(f"{what} also holds under {100 * share:.0f}% of the null's orderings")
        elif kind == "difference":
            what, lo, hi = v
            if lo <= 0 <= hi:
                out.append(f"{what}: the 95% interval of the difference [{lo:.3g}, {hi:.3g}] spans 0")
        elif kind == "base_rate":
            what, k, above, n = v
            p = p_all_above(k, above, n)
            if p >= BASE_P:
                out.append(f"{what}: {above} of {n} models lie above; {k} random models would all lie above "
                           f"with probability {p:.2f}")
        elif kind == "determined":
            what, n_obs, n_par = v
            if 0 < n_obs - n_par < 2:
                out.append(f"near-determined: {what} has {n_obs - n_par} residual degree of freedom")
        elif kind == "in_band":
            what, g, lo, hi = v
            out.append(f"{what} rests on gamma = {g:+.3g}, inside the transition band [{lo:g}, {hi:g}]")
    return list(dict.fromkeys(out))
