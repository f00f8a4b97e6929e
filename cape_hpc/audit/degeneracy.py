"""Degeneracy checks: when a match is not a reproduction (docs/METHODS.md §2.15, "Degenerate fits").

While a claim's computation runs it records *facts* about the fits and intervals it used
(``AuditContext.fact``); :func:`reasons` turns them into the reasons a match is degenerate, under
the claim's thresholds (``checks:`` in ``data/claims.yaml``, defaults in :data:`CHECKS`):

``min_terms``
    a sparse fit (SINDy) keeps fewer than this many active terms in some equation (default 1: an
    equation with no term at all);
``zero_variance``
    a fitted model predicts no change at all for some benchmark (its equation is identically zero,
    or a constant-free model predicts a constant trajectory) -- the error of a flat prediction is
    not evidence for the dynamics;
``exactly_determined``
    a fit has no more observations than parameters (a line through two gammas, a quadratic
    through three models, a per-phase line over two intervals): it passes through its data whatever
    they are;
``coupling``
    a fitted ODE of several scores has no coupling term (each equation involves only its own score or a
    constant: a constant drift from the start model, or a state of one score), so it says nothing
    about how the scores drive each other;
``min_valid_share``
    an interval that the claim compares comes from fewer than this share of valid resamples
    (default 0.5), or is degenerate by ``cape_hpc.stats.summarize`` (too few valid resamples,
    zero width, no interval).

A check set to ``false`` (or 0) is off for the claim.
"""
from __future__ import annotations

from typing import Any

__all__ = ["CHECKS", "reasons"]

#: the checks and their defaults (a claim's ``checks:`` overrides them)
CHECKS: dict[str, Any] = {"min_terms": 1, "zero_variance": True, "exactly_determined": True,
                          "coupling": True, "min_valid_share": 0.5}


def reasons(facts: list[tuple[str, Any]], checks: dict[str, Any] | None = None) -> list[str]:
    """The degeneracy reasons of one evaluation's facts (empty: not degenerate)."""
    cfg = {**CHECKS, **(checks or {})}
    out: list[str] = []
    for kind, v in facts:
        if kind == "active_terms" and cfg["min_terms"]:
            need = int(cfg["min_terms"])
            low = [f"{eq} {k}" for eq, k in v.items() if k < need]
            if low:
                out.append(f"sparse fit keeps {sum(v.values())} term(s) in all; fewer than {need} in: "
                           + ", ".join(low))
        elif kind == "zero_change" and cfg["zero_variance"] and v:
            out.append(f"zero-variance prediction: no change predicted for {', '.join(v)}")
        elif kind == "determined" and cfg["exactly_determined"]:
            what, n_obs, n_par = v
            if n_obs <= 0:
                out.append(f"no observations: {what} is empty")
            elif n_obs <= n_par:
                out.append(f"exactly determined: {what} has {n_obs} observation(s) for {n_par} parameter(s)")
        elif kind == "coupling_terms" and cfg["coupling"]:
            what, k = v
            if k < 1:
                out.append(f"no coupling term: {what} has no term linking one score to another")
        elif kind == "interval" and cfg["min_valid_share"] is not False:
            what, summary = v
            share = summary.valid_share
            need = float(cfg["min_valid_share"] or 0.0)
            widths = [ci for ci in summary.intervals if ci.defined]
            if summary.degenerate:
                out.append(f"{what}: degenerate interval ({summary.note})")
            elif any(ci.zero_width for ci in widths):
                out.append(f"{what}: degenerate interval (zero width: the bounds agree to 1e-9)")
            elif share == share and share < need:
                out.append(f"{what}: interval from {summary.n_valid}/{summary.n_resamples} valid resamples "
                           f"({100 * share:.3g}% < {100 * need:.3g}%)")
    return list(dict.fromkeys(out))
