"""Claims about the sign of the local coupling gamma (docs/METHODS.md §2.1-2.2): sign flips, positive
shares, gamma at a model, the share positive above N_c, the exchange rate above N_c."""
from __future__ import annotations

import math

import numpy as np

from cape_hpc.audit.computations.context import (AuditContext, Unavailable, coupling, families_present, gammas,
                                                 need_models)
from cape_hpc.audit.computations.nc import nc_log10
from cape_hpc.audit.targets import Partial


def claim_sign_flip_count(ctx: AuditContext, families=()):
    """How many of the named families have gamma negative at small N and positive at large N
    (a negative interval followed later by a positive one).  Partial when families are missing."""
    from cape_hpc.analysis.options import PhasesOptions

    band = PhasesOptions()
    present, missing = families_present(ctx.scores, families, min_models=3)
    k = 0
    for f in present:
        g = gammas(ctx, f)
        neg = [i for i, v in enumerate(g) if v < 0]
        if neg and any(v > 0 for v in g[neg[0]:]):
            k += 1
            top = max(v for v in g[neg[0]:] if v > 0)
            if top <= band.bonus_above:
                ctx.fact("in_band", (f"the sign change of {f}", top, band.tax_below, band.bonus_above))
    if missing:
        return Partial(k, k + len(missing), missing)
    return k


def claim_all_positive(ctx: AuditContext, families=(), b1="HS", b2="TQA"):
    """True when every defined gamma of every named family is > 0 (cooperative at all sizes)."""
    present, missing = families_present(ctx.scores, families, min_models=2)
    ok = all(all(v > 0 for v in gammas(ctx, f, b1, b2)) and gammas(ctx, f, b1, b2) for f in present)
    if not ok:
        return False
    if missing:
        raise Unavailable("data", f"{', '.join(missing)}: fewer than 2 models in the scores table")
    return True


def claim_fraction_positive(ctx: AuditContext, b1="HS", b2="ARC"):
    """Fraction of all defined intervals (every family) with gamma > 0."""
    g = [iv.gamma for iv in coupling(ctx, b1, b2).intervals if math.isfinite(iv.gamma)]
    return float(np.mean(np.array(g) > 0)) if g else math.nan


def claim_gamma_at(ctx: AuditContext, model, b1="HS", b2="TQA", attach="larger"):
    """gamma of the interval ending at ``model`` (attach='larger') or starting at it ('smaller')."""
    need_models(ctx.scores, [model])
    fam = ctx.scores.loc[ctx.scores["model"] == model, "family"].iloc[0]
    for iv in coupling(ctx, b1, b2, [fam]).intervals:
        if (attach == "larger" and iv.model == model) or (attach == "smaller" and iv.prev_model == model):
            return iv.gamma
    return math.nan


def claim_max_gamma_at(ctx: AuditContext, models=(), attach="larger"):
    vals = [claim_gamma_at(ctx, m, attach=attach) for m in models]
    return max(vals) if all(math.isfinite(v) for v in vals) else math.nan


def claim_above_nc_positive(ctx: AuditContext, pairs=(("HS", "TQA"), ("WG", "TQA"), ("MMLU", "TQA")), split="scale"):
    """For each pair: the fraction of intervals with gamma > 0 among the intervals above their
    family's N_c (split 'scale': midpoint above the (HS, TQA) sign-change N_c; 'gamma': the
    intervals in the bonus phase of (HS, TQA)); the smallest fraction over the pairs."""
    fams = list(dict.fromkeys(ctx.scores["family"]))
    nc = {f: nc_log10(ctx, f) for f in fams} if split == "scale" else {}
    ref = {(iv.family, iv.model): iv.phase for iv in coupling(ctx, "HS", "TQA").intervals}
    fracs = []
    for b1, b2 in pairs:
        sel = []
        for iv in coupling(ctx, b1, b2).intervals:
            if not math.isfinite(iv.gamma):
                continue
            if split == "scale":
                x = nc.get(iv.family, math.nan)
                if math.isnan(x) or not iv.x_mid > x:
                    continue
            elif ref.get((iv.family, iv.model)) != "bonus":
                continue
            sel.append(iv.gamma > 0)
        fracs.append(float(np.mean(sel)) if sel else math.nan)
    if not fracs or any(math.isnan(f) for f in fracs):
        return math.nan
    return min(fracs)


def claim_exchange_rate(ctx: AuditContext, b1="HS", b2="TQA", subset="bonus", stat="ols"):
    """Points of ``b2`` per point of ``b1`` above N_c: 'ols' = least-squares slope of B2 on B1 over
    the models of the subset (pooled); 'mean_gamma' / 'median_gamma' over its intervals.  subset
    'bonus': intervals (and their larger models) in the bonus phase; 'above_nc': intervals whose
    midpoint lies above the family's sign-change N_c."""
    from cape_hpc.analysis import ols_line

    cr = coupling(ctx, b1, b2)
    ivs = [iv for iv in cr.intervals if math.isfinite(iv.gamma)]
    if subset == "bonus":
        ivs = [iv for iv in ivs if iv.phase == "bonus"]
    else:
        nc = {f: nc_log10(ctx, f) for f in dict.fromkeys(iv.family for iv in ivs)}
        ivs = [iv for iv in ivs if math.isfinite(nc[iv.family]) or nc[iv.family] == -math.inf]
        ivs = [iv for iv in ivs if iv.x_mid > nc[iv.family]]
    if len(ivs) < 2:
        return math.nan
    if stat == "mean_gamma":
        return float(np.mean([iv.gamma for iv in ivs]))
    if stat == "median_gamma":
        return float(np.median([iv.gamma for iv in ivs]))
    models = sorted({iv.model for iv in ivs} | {iv.prev_model for iv in ivs})
    rows = ctx.scores.loc[ctx.scores["model"].isin(models)].dropna(subset=[b1, b2])
    ctx.fact("determined", ("the exchange-rate line", len(rows), 2))
    if len(rows) < 3:
        return math.nan
    return ols_line(rows[b1].to_numpy(float), rows[b2].to_numpy(float))[0]
