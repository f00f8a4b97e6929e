"""Specification-curve reporting of one claim (docs/METHODS.md §2.15, "Multiplicity").

A multiverse analysis (Steegen et al. 2016; Simonsohn, Simmons and Nelson 2020): every combination
the search computed is one specification.  For each claim the audit reports

- how many combinations matched, out of how many computed, and how many of the matches were
  degenerate;
- the median and the 5-95% range of the clean (non-degenerate) numeric values, and the percentile at
  which the paper's value falls among them;
- the **look-elsewhere coverage**: the share of nearby target values (a grid of :data:`GRID` values
  over the paper's value +- :data:`WINDOW` of it) that some clean combination would also have matched
  within the claim's tolerance -- how easily the search "reproduces" a number near the printed one;
- a **grade**: ``robust`` when the stated method, or at least half of the one-change neighbours that
  were computed, match (clean) and the coverage is at most :data:`MAX_COVERAGE`; ``fragile``
  otherwise (only a combination of two or more changes matches, a minority of the one-change
  neighbours, or the coverage exceeds 20%); '' when nothing matched.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["SpecCurve", "spec_curve", "coverage", "grade", "WINDOW", "GRID", "MAX_COVERAGE"]

WINDOW = 0.5          # nearby targets: the paper's value +- 50% of it
GRID = 201            # nearby targets evaluated
MAX_COVERAGE = 0.2    # above this share the match is cheap: 'fragile'


@dataclass
class SpecCurve:
    """The specification curve of one claim (see the module doc)."""

    n_computed: int
    n_matches: int
    n_degenerate: int
    median: float          # of the clean numeric values (NaN when there are none)
    p05: float
    p95: float
    paper_percentile: float   # share of clean values <= the paper's value (NaN: not a single number)
    coverage: float           # look-elsewhere coverage (NaN: not a single number)
    grade: str

    def text(self) -> str:
        """One line for the audit table."""
        out = f"{self.n_matches}/{self.n_computed} match ({self.n_degenerate} degenerate)"
        if math.isfinite(self.median):
            out += f"; clean values median {self.median:.4g} [5-95%: {self.p05:.4g}, {self.p95:.4g}]"
        if math.isfinite(self.paper_percentile):
            out += f"; paper at {100 * self.paper_percentile:.0f}%"
        if math.isfinite(self.coverage):
            out += f"; coverage {100 * self.coverage:.0f}%"
        return out


def coverage(paper: float, tol: float, values: np.ndarray) -> float:
    """Share of the targets t on a grid over paper +- WINDOW * |paper| (+- 10 tol when that is wider)
    for which some value lies within ``tol`` of t."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0
    half = max(WINDOW * abs(paper), 10 * tol)
    grid = np.linspace(paper - half, paper + half, GRID)
    hit = np.abs(grid[:, None] - values[None, :]) <= tol * (1 + 1e-9)
    return float(hit.any(axis=1).mean())


def grade(stated_match: bool, one_change: list[bool], any_match: bool, cover: float) -> str:
    """'robust' / 'fragile' / '' (nothing matched); see the module doc."""
    if not any_match:
        return ""
    local = stated_match or (bool(one_change) and sum(one_change) >= len(one_change) / 2)
    cheap = math.isfinite(cover) and cover > MAX_COVERAGE
    return "robust" if local and not cheap else "fragile"


def spec_curve(tried, target=None) -> SpecCurve:
    """The curve of a claim's computed combinations (``AlternativeResult``s, the stated one first);
    ``target``: the claim's single numeric ``Target`` (None for counts, bounds, yes/no, lists)."""
    computed = [t for t in tried if t.value != "-" or t.matches]
    matches = [t for t in computed if t.matches]
    clean = np.array([t.number for t in computed if not t.degenerate and t.number is not None], float)
    clean = clean[np.isfinite(clean)]
    med = p05 = p95 = pct = cov = math.nan
    if clean.size:
        med, p05, p95 = (float(v) for v in np.percentile(clean, [50, 5, 95]))
    if target is not None:
        pct = float(np.mean(clean <= target.value)) if clean.size else math.nan
        cov = coverage(target.value, target.tol, clean)
    stated = computed[0] if computed and computed[0].n_changes == 0 else None
    one = [t.matches and not t.degenerate for t in computed if t.n_changes == 1]
    g = grade(bool(stated and stated.matches and not stated.degenerate), one,
              any(not t.degenerate for t in matches), cov)
    return SpecCurve(len(computed), len(matches), sum(1 for t in matches if t.degenerate), med, p05, p95, pct, cov, g)
