"""What an analysis keeps of a bootstrap: :func:`summarize` and its interval notes (docs/METHODS.md
§2.4, "Interval notes"), and :func:`note_extrapolation`, the one note that needs the data's range.
"""
from __future__ import annotations

import dataclasses
import math

from cape_hpc.schema import BootstrapSummary
from cape_hpc.stats.bootstrap import BootstrapResult

__all__ = ["summarize", "note_extrapolation", "min_valid", "MIN_VALID", "MIN_VALID_FRACTION"]

# the fewest valid resamples whose interval can carry a claim: max(MIN_VALID, MIN_VALID_FRACTION * R)
MIN_VALID = 100
MIN_VALID_FRACTION = 0.01


def min_valid(n_resamples: int) -> int:
    """The stated minimum of valid resamples below which a bootstrap is degenerate:
    max(MIN_VALID, ceil(MIN_VALID_FRACTION * n_resamples)) -- 100 of 10,000, 1,000 of 100,000."""
    return max(MIN_VALID, math.ceil(MIN_VALID_FRACTION * int(n_resamples)))


def _join(*notes: str) -> str:
    return "; ".join(x for x in notes if x)


def summarize(res: BootstrapResult, *, discrete: bool | None = None) -> BootstrapSummary:
    """What an analysis keeps of a bootstrap (the only maker of BootstrapSummary), with its notes
    (docs/METHODS.md §2.4, "Interval notes").

    ``degenerate`` is True, with ``note`` saying why, when no interval is defined, when fewer than
    ``min_valid(n_resamples)`` resamples are valid (``few_valid``), or when an interval has zero
    width (``zero_width``: every valid value inside it equal); the engine's own note (e.g. why BCa
    is undefined) comes first.  Not degenerate but noted: ``estimate_missing`` (the full-sample
    estimate is NaN while resamples gave values -- an interval without its point), ``discrete``
    (``res.discrete``: the statistic returns one of finitely many observed values, as the
    sign-change N_c does; ``discrete=`` overrides) and ``valid_share``.  ``extrapolated`` is left
    False: the caller that knows the data's range sets it with :func:`note_extrapolation`.
    """
    reasons = []
    defined = [ci for ci in res.intervals if ci.defined]
    if not defined:
        reasons.append("no interval defined")
    need = min_valid(res.n_resamples)
    few = res.n_valid < need
    if few:
        reasons.append(f"{res.n_valid} valid resamples < minimum {need}")
    zero = any(ci.zero_width for ci in defined)
    if zero:
        reasons.append("zero-width interval")
    extra = []
    missing = bool(not math.isfinite(res.estimate) and res.n_valid > 0)
    if missing:
        extra.append("point estimate undefined on the full sample")
    discrete = res.discrete if discrete is None else discrete
    if discrete:
        extra.append("discrete estimator: resamples can only return observed sizes")
    share = res.n_valid / res.n_resamples if res.n_resamples else math.nan
    return BootstrapSummary(estimate=float(res.estimate), median=float(res.median),
                            intervals=list(res.intervals), n_valid=int(res.n_valid),
                            n_resamples=int(res.n_resamples), seed=int(res.seed), stratified=bool(res.stratified),
                            method=str(res.method), degenerate=bool(reasons), note=_join(res.note, *reasons, *extra),
                            valid_share=float(share), zero_width=bool(zero), estimate_missing=missing,
                            extrapolated=False, discrete=bool(discrete), few_valid=bool(few))


def note_extrapolation(summary: BootstrapSummary, lo: float, hi: float, where: str,
                       level: float = 0.95) -> BootstrapSummary:
    """``summary`` with ``extrapolated`` set and the note "extrapolated: point or 95% bound outside
    ``where``" added when its point or a bound of its ``level`` interval lies outside [lo, hi], the
    range of the data the statistic was fitted on (``where`` describes it in words).  Unchanged when
    no bootstrap was run, when the range is not finite or when no value is finite."""
    if not summary.n_resamples or not (math.isfinite(lo) and math.isfinite(hi)):
        return summary
    ci = summary.interval(level)
    values = [v for v in (summary.estimate, ci.low, ci.high) if math.isfinite(v)]
    if not values or all(lo <= v <= hi for v in values):
        return summary
    text = f"extrapolated: point or {100 * level:g}% bound outside {where}"
    return dataclasses.replace(summary, extrapolated=True, note=_join(summary.note, text))
