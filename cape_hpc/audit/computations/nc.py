"""Claims about the critical scale N_c (docs/METHODS.md §2.4), in billions of parameters."""
from __future__ import annotations

import math

from cape_hpc.audit.computations.context import AuditContext, gammas, need_families


def nc_result(ctx, families, estimator, pooled, stratify, units, bootstrap, attach="larger", window=None):
    from cape_hpc.analysis.nc import NcOptions, estimate_nc

    opts = NcOptions(estimator=estimator, families=None if families is None else tuple(families), pooled=pooled,
                     stratify=stratify, units=units, bootstrap=bootstrap, n_resamples=ctx.n_resamples,
                     seed=ctx.seed, attach=attach, window=None if window is None else tuple(map(float, window)))
    return ctx.cached(("nc", opts), lambda: estimate_nc(ctx.scores, opts))


def claim_nc(ctx: AuditContext, family="Pythia", estimator="gamma-fit", pooled=False, stratify=True,
         units="percent", quantity="nc", level=0.95, attach="larger", window=None):
    """N_c in billions: quantity 'nc' (point), 'median', 'ci_lo', 'ci_hi', 'none' (True when no
    crossing because gamma is positive everywhere), or a list of these.  ``family``: one family, a
    list (one estimate each; ``pooled``: one over the named families together) or 'all'.  ``attach``
    ('smaller' | 'midpoint') moves the sign-change N to the interval's smaller model or geometric
    midpoint; ``window`` [lo, hi] in log10 N bounds the vertex (``estimate_nc``'s options)."""
    if isinstance(quantity, (list, tuple)):
        return [claim_nc(ctx, family, estimator, pooled, stratify, units, q, level, attach, window) for q in quantity]
    fams = None if family in (None, "all") else ([family] if isinstance(family, str) else list(family))
    if fams is not None:
        need_families(ctx.scores, fams, min_models=3, what=" (N_c needs >= 3 models)")
    boot = quantity in ("median", "ci_lo", "ci_hi")
    res = nc_result(ctx, fams, estimator, pooled, stratify, units, boot,
                    attach if estimator == "sign-change" else "larger", window)
    est = res.estimates[0] if pooled or len(res.estimates) == 1 else res.by_scope()[fams[0]]
    if estimator == "gamma-fit":
        ctx.fact("determined", (f"the gamma-fit line of {est.scope}", est.n_intervals, 2))
    elif estimator == "quadratic":
        ctx.fact("determined", (f"the quadratic of {est.scope}", est.n_models, 3))
    if boot:
        ctx.fact("interval", (f"N_c interval of {est.scope}", est.bootstrap))
    if pooled and estimator == "sign-change" and (fams is None or len(fams) > 1):
        ctx.fact("note", f"pooled sign-change over {len(fams) if fams else 'all'} families: their gamma "
                         f"sequences are concatenated in order of N, so the sign change may fall between two families")
    if est.extrapolated or (boot and est.bootstrap.extrapolated):
        ctx.fact("note", "extrapolated beyond the data (docs/METHODS.md §2.4)")
    if quantity == "none":
        return bool(not math.isfinite(est.log10_nc) and "positive at every interval" in est.reason)
    if quantity == "nc":
        return est.nc / 1e9
    if quantity == "median":
        return _billions(est.bootstrap.median)
    ci = est.bootstrap.interval(level)
    return _billions(ci.low if quantity == "ci_lo" else ci.high)


def _billions(log10_n: float) -> float:
    """10^log10_n / 1e9 (inf when it overflows a float: a bound far beyond any model)."""
    try:
        return 10 ** log10_n / 1e9
    except OverflowError:
        return math.inf


def claim_nc_ratio(ctx: AuditContext, families=(), estimator="sign-change", attach="larger"):
    """max / min of the per-family N_c."""
    vals = [claim_nc(ctx, f, estimator, attach=attach) for f in families]
    vals = [v for v in vals if isinstance(v, float) and math.isfinite(v) and v > 0]
    if len(vals) < 2:
        return math.nan
    return max(vals) / min(vals)


def nc_log10(ctx: AuditContext, family: str) -> float:
    """log10 of a family's sign-change N_c (HS, TQA); -inf when gamma is positive everywhere, +inf
    when negative everywhere, NaN when the family has too few intervals or no single change."""
    gs = gammas(ctx, family)
    if len(gs) < 2:
        return math.nan
    v = claim_nc(ctx, family, "sign-change")
    if isinstance(v, float) and math.isfinite(v):
        return math.log10(v * 1e9)
    signed = [g for g in gs if g != 0]   # gamma == 0 has no sign: skipped, as the sign-change N_c skips it
    if signed and all(g > 0 for g in signed):
        return -math.inf
    if signed and all(g < 0 for g in signed):
        return math.inf
    return math.nan
