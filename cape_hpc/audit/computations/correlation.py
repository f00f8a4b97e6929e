"""Claims about correlations over a set of models (docs/METHODS.md §2.3): Pearson r / p, Spearman rho,
n; r of the local gamma against log10 N."""
from __future__ import annotations

import math

import numpy as np

from cape_hpc.audit.computations.context import AuditContext, Unavailable, coupling, need_families


def claim_pearson(ctx: AuditContext, b1="HS", b2="TQA", families=None, min_params=None, strict=False,
              phase=None, stat="r", p_method="analytic", max_params=None):
    """Pearson r (stat='r'), its p-value ('p'), Spearman rho ('rho') or n ('n') over a set of models:
    the named families pooled (all when None), with params >= ``min_params`` (> when ``strict``) and
    < ``max_params`` (a scale split inside a family)."""
    from cape_hpc.analysis.options import PopulationOptions
    from cape_hpc.analysis.population import population_coupling

    df = ctx.scores
    if families is not None:
        need_families(df, families)
        df = df.loc[df["family"].isin([families] if isinstance(families, str) else families)]
    if min_params is not None:
        df = df.loc[df["params"] > float(min_params)] if strict else df.loc[df["params"] >= float(min_params)]
    if max_params is not None:
        df = df.loc[df["params"] < float(max_params)]
    if phase is not None:
        res = population_coupling(ctx.scores if families is None else df,
                                  PopulationOptions(pair=(b1, b2), group_by="phase", p_method=p_method, seed=ctx.seed))
        g = {x.group: x for x in res.groups}.get(phase)
        if g is None:
            return math.nan
    else:
        if len(df) < 3:
            raise Unavailable("data", f"only {len(df)} model(s) in the set")
        g = population_coupling(df, PopulationOptions(pair=(b1, b2), p_method=p_method, seed=ctx.seed)).groups[0]
    return {"r": g.pearson_r, "p": g.pearson_p if p_method == "analytic" else g.perm_pearson_p,
            "rho": g.spearman_rho, "n": g.n}[stat]


def claim_gamma_logn_r(ctx: AuditContext, b1="HS", b2="TQA", stat="r"):
    """Pearson r of every defined local gamma against its midpoint log10 N (all families pooled)."""
    from cape_hpc.analysis.population import correlate

    cr = coupling(ctx, b1, b2)
    ivs = [iv for iv in cr.intervals if math.isfinite(iv.gamma)]
    g = correlate(np.array([iv.x_mid for iv in ivs]), np.array([iv.gamma for iv in ivs]))
    return {"r": g.pearson_r, "p": g.pearson_p, "n": g.n}[stat]
