"""Claims about the per-phase coupling coefficient (docs/METHODS.md §2.13): the phase line of
``cape_hpc.dynamics.phase_fits``, or a dense linear ODE per phase, with the phases by gamma's sign or
split by scale at each family's N_c."""
from __future__ import annotations

import math

import numpy as np

from cape_hpc.audit.computations.context import AuditContext, Unavailable, coupling, need_families
from cape_hpc.audit.computations.nc import c_nc
from cape_hpc.errors import OptionError


def c_phase_coef(ctx: AuditContext, phase="tax", families=None, units="fraction", method="phase_fit",
                 quantity="b", split="gamma"):
    """HS -> TQA coupling coefficient per phase: 'phase_fit' = b of dTQA/dlogN = a + b HS_mid over
    the phase's intervals (docs/METHODS.md §2.13); 'linear_ode' = the TQA<-HS entry of a dense linear ODE fitted
    on the phase's interval rows.  quantity 'b' or 'ratio' (|bonus| / |tax|)."""
    from cape_hpc.dynamics import PhaseFitOptions, phase_fits

    if families is not None:
        need_families(ctx.scores, families, min_models=2)
    if quantity == "ratio":
        t = c_phase_coef(ctx, "tax", families, units, method, split=split)
        b = c_phase_coef(ctx, "bonus", families, units, method, split=split)
        return abs(b) / abs(t) if t else math.nan
    if split == "scale":
        return _phase_by_scale(ctx, phase, families, units, method)
    if method == "phase_fit":
        opts = PhaseFitOptions(families=None if families is None else tuple(families), units=units)
        r = ctx.cached(("phasefit", opts), lambda: phase_fits(ctx.scores, opts))
        f = {f.phase: f for f in r.fits}[phase]
        ctx.fact("determined", (f"the {phase} line", f.n_intervals, 2))
        return f.b
    if method == "linear_ode":
        return _phase_linear_ode(ctx, phase, families, units)
    raise OptionError(f"claims registry: unknown phase method {method!r}")


def _phase_by_scale(ctx, phase, families, units, method):
    """The per-phase coefficient with the intervals split by scale: an interval is 'tax' when its
    midpoint lies below its family's sign-change N_c and 'bonus' above it (a family whose gamma is
    positive everywhere is all bonus, negative everywhere all tax); the same least squares
    dB2/dlog10N = a + b B1_mid (docs/METHODS.md §2.13), or the linear ODE's TQA<-HS entry."""
    from cape_hpc.options import units_factor

    cr = coupling(ctx, "HS", "TQA", families)
    ivs = [iv for iv in cr.intervals if math.isfinite(iv.gamma)]
    nc = {}
    for fam in dict.fromkeys(iv.family for iv in ivs):
        gs = [iv.gamma for iv in ivs if iv.family == fam]
        if len(gs) < 2 or sum(1 for iv in cr.intervals if iv.family == fam) < 2:
            continue
        try:
            v = c_nc(ctx, fam, "sign-change")
        except Unavailable:
            v = math.nan
        if math.isfinite(v):
            nc[fam] = math.log10(v * 1e9)
        elif all(g > 0 for g in gs):
            nc[fam] = -math.inf
        elif all(g < 0 for g in gs):
            nc[fam] = math.inf
    sel = [iv for iv in ivs if iv.family in nc and ((iv.x_mid < nc[iv.family]) == (phase == "tax"))]
    scale = units_factor(units)
    if method == "linear_ode":
        return _phase_linear_ode(ctx, phase, families, units, intervals=sel)
    xs = np.array([iv.b1_mid for iv in sel]) * scale / cr_scale(cr)
    ys = np.array([iv.d_b2 / (math.log10(iv.n) - math.log10(iv.prev_n)) for iv in sel]) * scale / cr_scale(cr)
    ctx.fact("determined", (f"the {phase} line (split by scale)", len(sel), 2))
    if len(sel) < 2 or np.ptp(xs) == 0:
        return math.nan
    A = np.column_stack([np.ones(len(xs)), xs])
    coef, *_ = np.linalg.lstsq(A, ys, rcond=None)
    return float(coef[1])


def cr_scale(cr) -> float:
    """The units factor the coupling result was computed in (its b1_mid, d_b2 are in its units)."""
    from cape_hpc.options import units_factor

    return units_factor(cr.units)


def _phase_linear_ode(ctx, phase, families, units, intervals=None):
    from cape_hpc.dynamics import ODEOptions, make_model
    from cape_hpc.io.scores import SCORE_COLUMNS
    from cape_hpc.options import units_factor

    df = ctx.scores.dropna(subset=list(SCORE_COLUMNS))
    cr = coupling(ctx, "HS", "TQA", families, df=df)
    scale = units_factor(units)
    by = df.set_index("model")
    S, D = [], []
    keep = None if intervals is None else {(iv.prev_model, iv.model) for iv in intervals}
    for iv in cr.intervals:
        if (iv.phase != phase) if keep is None else ((iv.prev_model, iv.model) not in keep):
            continue
        a = by.loc[iv.prev_model, list(SCORE_COLUMNS)].to_numpy(float) * scale
        b = by.loc[iv.model, list(SCORE_COLUMNS)].to_numpy(float) * scale
        S.append(0.5 * (a + b))
        D.append((b - a) / (math.log10(iv.n) - math.log10(iv.prev_n)))
    ctx.fact("determined", (f"the {phase} linear ODE", len(S), len(SCORE_COLUMNS) + 1))
    if len(S) < 2:
        return math.nan
    m = make_model(ODEOptions(model="linear", units=units)).fit_rows(np.array(S), np.array(D))
    return float(m.C_[list(SCORE_COLUMNS).index("TQA"), list(SCORE_COLUMNS).index("HS")])
