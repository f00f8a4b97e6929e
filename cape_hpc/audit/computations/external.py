"""Claims on the other tables and sources: the validation-loss law (§2.9), the frontier fit (§2.12),
the paper's own counts (Wilson interval), model internals (§3.10), data the project does not ship,
and methods the paper does not state."""
from __future__ import annotations

import os

import numpy as np

from cape_hpc.audit.computations.context import AuditContext, Unavailable


def claim_loss(ctx: AuditContext, quantity="r2", n_scale=1e9, cv_ddof=0):
    from cape_hpc.analysis.losslaw import loss_law
    from cape_hpc.analysis.options import LossOptions

    if ctx.loss is None:
        raise Unavailable("data", "no validation-loss table")
    opts = LossOptions(n_scale=n_scale, cv_ddof=cv_ddof)
    r = ctx.cached(("loss", opts), lambda: loss_law(ctx.loss, opts))
    inv = np.array(r.invariant)
    return {"r2": r.r2, "cv_percent": 100 * r.cv, "invariant_mean": float(inv.mean()),
            "invariant_std": float(inv.std(ddof=cv_ddof)), "n": len(inv), "alpha": r.alpha}[quantity]


def claim_frontier(ctx: AuditContext, quantity="r", cohort="main", subset=None, min_lab_size=3):
    from cape_hpc.analysis.frontier import frontier_fit
    from cape_hpc.analysis.options import FrontierOptions

    if ctx.frontier is None:
        raise Unavailable("data", "no frontier table")
    fr = ctx.frontier
    if subset is not None:
        if "subset" not in fr.columns:
            raise Unavailable("data", "the frontier table has no 'subset' column")
        fr = fr.loc[fr["subset"] == subset]
    opts = FrontierOptions(cohort=cohort, min_lab_size=min_lab_size)
    r = ctx.cached(("front", opts, subset), lambda: frontier_fit(fr, opts))
    if quantity == "n_labs":
        return int(fr.loc[fr["cohort"] == cohort, "lab"].nunique())
    if quantity == "lolo_halfrange":   # the spread as half the range of the labs' holdout errors
        errs = [lf.holdout_mae for lf in r.labs if np.isfinite(lf.holdout_mae)]
        return 0.5 * (max(errs) - min(errs)) if errs else float("nan")
    return {"slope": r.slope, "intercept": r.intercept, "r": r.r, "p": r.p, "n": r.n,
            "lolo_mean": r.lolo_mae_mean, "lolo_std0": r.lolo_mae_std_ddof0, "lolo_std1": r.lolo_mae_std_ddof1,
            "n_lolo_labs": r.n_lolo_labs}[quantity]


def claim_wilson(ctx: AuditContext, k=38, n=40, level=0.95):
    """Wilson score interval (percent) for k successes of n -- inputs are the paper's own counts
    (``cape_hpc.stats.wilson_interval``, the steering intervention-rate interval, docs/METHODS.md §4)."""
    from cape_hpc.stats.intervals import wilson_interval

    ci = wilson_interval(int(k), int(n), float(level))
    return [100 * ci.low, 100 * ci.high]


def claim_internals(ctx: AuditContext, models=(), quantity=""):
    """Claims about hidden states / heads / projections, computed from the cross-model table of the
    ``--internals`` file (``cape_hpc.crossmodel.claims``, docs/METHODS.md §3.10).  A claim with a named
    model missing stays unavailable and lists the missing models: never computed from fewer models
    than it names."""
    if not (ctx.internals and os.path.exists(ctx.internals)):
        raise Unavailable("internals", f"needs hidden states of {', '.join(models) or 'the models'} "
                                       f"(run `cape internals` or a sweep and `cape merge`, pass --internals FILE.h5)")
    from cape_hpc.crossmodel.claims import NotComputable, evaluate_internal_claim, table_from_file

    table, heads = ctx.cached(("crossmodel", ctx.internals),
                              lambda: table_from_file(ctx.internals, ctx.scores, ctx.n_resamples, ctx.seed))
    try:
        v = evaluate_internal_claim(table, list(models), quantity, head_couplings=heads)
    except NotComputable as exc:
        raise Unavailable("internals", f"{quantity}: {exc}") from None
    if v.missing:
        raise Unavailable("internals", f"internals missing for {'; '.join(v.missing)} "
                                       f"({len(v.found)} named model(s) found in {ctx.internals})")
    if v.note:
        ctx.fact("note", v.note)
    return v.value


def claim_external(ctx: AuditContext, what="", table=None):
    """Claims from data the project does not ship (gradients, checkpoints): a table must exist."""
    from cape_hpc.io.data import data_dir
    if table and (data_dir() / table).exists():
        raise Unavailable("data", f"{table} exists but the audit has no computation for {what!r} yet")
    raise Unavailable("data", f"needs {what}" + (f" (no {table} in {data_dir()})" if table else ""))


def claim_not_stated(ctx: AuditContext, what=""):
    raise Unavailable("method", what)
