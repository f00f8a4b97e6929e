"""Claims about the per-phase coupling coefficient (docs/METHODS.md §2.13): the phase line of
``cape_hpc.dynamics.phase_fits``, or a dense linear ODE per phase, with the phases by gamma's sign or
split by scale at each family's N_c."""
from __future__ import annotations

import math

import numpy as np

from cape_hpc.audit.computations.context import AuditContext, coupling, need_families
from cape_hpc.audit.computations.nc import nc_log10
from cape_hpc.errors import OptionError


def claim_phase_coef(ctx: AuditContext, phase="tax", families=None, units="fraction", method="phase_fit",
                 quantity="b", split="gamma"):
    """HS -> TQA coupling coefficient per phase: 'phase_fit' = b of dTQA/dlogN = a + b HS_mid over
    the phase's intervals (docs/METHODS.md §2.13); 'linear_ode' = the TQA<-HS entry of a dense linear ODE fitted
    on the phase's interval rows.  quantity 'b' or 'ratio' (|bonus| / |tax|)."""
    from cape_hpc.dynamics import PhaseFitOptions, phase_fits

    if families is not None:
        need_families(ctx.scores, families, min_models=2)
    if quantity == "ratio":
        t = claim_phase_coef(ctx, "tax", families, units, method, split=split)
        b = claim_phase_coef(ctx, "bonus", families, units, method, split=split)
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
    from cape_hpc.analysis import ols_line
    from cape_hpc.options import units_factor

    cr = coupling(ctx, "HS", "TQA", families)
    ivs = [iv for iv in cr.intervals if math.isfinite(iv.gamma)]
    nc = {f: nc_log10(ctx, f) for f in dict.fromkeys(iv.family for iv in ivs)}
    sel = [iv for iv in ivs if not math.isnan(nc[iv.family]) and ((iv.x_mid < nc[iv.family]) == (phase == "tax"))]
    if method == "linear_ode":
        return _phase_linear_ode(ctx, phase, families, units, intervals=sel)
    scale = units_factor(units) / units_factor(cr.units)
    xs = np.array([iv.b1_mid for iv in sel]) * scale
    ys = np.array([iv.d_b2 / (math.log10(iv.n) - math.log10(iv.prev_n)) for iv in sel]) * scale
    ctx.fact("determined", (f"the {phase} line (split by scale)", len(sel), 2))
    return ols_line(xs, ys)[0]


def _phase_linear_ode(ctx, phase, families, units, intervals=None):
    """The TQA<-HS entry of a dense linear ODE fitted on the forward-difference rows
    (``cape_hpc.dynamics.derivative_rows``) of the phase's intervals (complete rows only)."""
    from cape_hpc.dynamics import ODEOptions, derivative_rows, family_trajectory, make_model
    from cape_hpc.io.scores import SCORE_COLUMNS
    from cape_hpc.options import units_factor

    cols = list(SCORE_COLUMNS)
    df = ctx.scores.dropna(subset=cols)
    if intervals is None:
        intervals = [iv for iv in coupling(ctx, "HS", "TQA", families, df=df).intervals if iv.phase == phase]
    keep = {(iv.prev_model, iv.model) for iv in intervals}
    S, D = [], []
    for fam in dict.fromkeys(iv.family for iv in intervals):
        t = family_trajectory(df, fam, cols)
        _, s, d = derivative_rows(t, "forward", units_factor(units))
        pick = [i for i in range(len(s)) if (t.models[i], t.models[i + 1]) in keep]
        S.extend(s[pick])
        D.extend(d[pick])
    ctx.fact("determined", (f"the {phase} linear ODE", len(S), len(cols) + 1))
    if len(S) < 2:
        return math.nan
    m = make_model(ODEOptions(model="linear", units=units)).fit_rows(np.array(S), np.array(D))
    return float(m.C_[cols.index("TQA"), cols.index("HS")])
