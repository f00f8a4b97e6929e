"""Claims about the geometry of the score space: d_eff (§2.5), width normalisation (§2.6), the
isocline (§2.8), the fixed point (§2.10), the eigen-geometry (§2.11)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cape_hpc.audit.computations.context import AuditContext, Unavailable, families_present, need_families
from cape_hpc.errors import OptionError


def claim_deff(ctx: AuditContext, group="tax", matrix="covariance", quantity="d_eff", units="percent",
           width_normalised=False, d_ref=512.0):
    """d_eff (docs/METHODS.md §2.5) of one phase group, or its model / family count; quantity
    'decreasing' -> True when d_eff(tax) > d_eff(bonus) (the phases' order of the paper).
    ``width_normalised``: the scores divided by d_model / d_ref first (§2.6; rows without d_model
    left out; the phases are then those of the normalised scores' coupling)."""
    from cape_hpc.analysis.deff import DeffOptions, effective_dimension

    if quantity == "decreasing":
        vals = [claim_deff(ctx, g, matrix, "d_eff", units, width_normalised, d_ref) for g in ("tax", "bonus")]
        _deff_difference(ctx, matrix, units, width_normalised, d_ref)
        return bool(all(math.isfinite(v) for v in vals) and vals[0] > vals[1])
    opts = DeffOptions(matrix=matrix, units=units, bootstrap=False)
    df = ctx.scores
    if width_normalised:
        df = _width_normalised(ctx, d_ref)
    res = ctx.cached(("deff", opts, width_normalised, d_ref), lambda: effective_dimension(df, opts))
    g = {x.group: x for x in res.groups}[group]
    if quantity == "d_eff":
        # n models span at most n - 1 directions: fewer than the columns leaves the spectrum rank-deficient
        ctx.fact("determined", (f"the {group} covariance", g.n_models - 1, len(res.columns)))
    return {"d_eff": g.d_eff, "n_models": g.n_models, "n_families": g.n_families}[quantity]


def _deff_difference(ctx: AuditContext, matrix, units, width_normalised, d_ref) -> None:
    """Record the 95% interval of d_eff(tax) - d_eff(bonus): the two groups are disjoint sets of
    models resampled independently, so the difference's standard error is the root sum of squares of
    each bootstrap interval's (half-width / 1.96)."""
    from cape_hpc.analysis.deff import DeffOptions, effective_dimension

    opts = DeffOptions(matrix=matrix, units=units, bootstrap=True, n_resamples=ctx.n_resamples, seed=ctx.seed)
    df = _width_normalised(ctx, d_ref) if width_normalised else ctx.scores
    res = ctx.cached(("deff", opts, width_normalised, d_ref), lambda: effective_dimension(df, opts))
    g = res.by_group()
    if "tax" not in g or "bonus" not in g:
        return
    cis = [g[k].bootstrap.interval(0.95) for k in ("tax", "bonus")]
    if not all(ci.defined for ci in cis):
        return
    se = math.sqrt(sum(((ci.high - ci.low) / (2 * 1.959963984540054)) ** 2 for ci in cis))
    d = g["tax"].d_eff - g["bonus"].d_eff
    ctx.fact("difference", ("d_eff(tax) - d_eff(bonus)", d - 1.959963984540054 * se, d + 1.959963984540054 * se))


def _width_normalised(ctx: AuditContext, d_ref: float) -> pd.DataFrame:
    """The scores table with HS..MMLU divided by d_model / d_ref (rows without d_model left out);
    ``effective_dimension`` then assigns the phases from this table's own gammas."""
    from cape_hpc.io.scores import SCORE_COLUMNS

    def make():
        df = ctx.scores.dropna(subset=["d_model"]).copy()
        if df.empty:
            raise Unavailable("data", "no d_model in the scores table")
        f = df["d_model"].astype(float) / float(d_ref)
        for c in SCORE_COLUMNS:
            df[c] = df[c] / f
        df.attrs = dict(ctx.scores.attrs)
        return df

    return ctx.cached(("widthnorm", d_ref), make)


def claim_width(ctx: AuditContext, family="Pythia", d_ref=512.0):
    """[r before, r after] width normalisation of HS, TQA within one family."""
    from cape_hpc.analysis.options import WidthOptions
    from cape_hpc.analysis.width import width_normalisation

    need_families(ctx.scores, [family], min_models=3)
    opts = WidthOptions(d_ref=d_ref, n_permutations=100, seed=ctx.seed, families=(family,))
    r = ctx.cached(("width", opts), lambda: width_normalisation(ctx.scores, opts))
    f = {x.family: x for x in r.families}.get(family)
    if f is None:
        raise Unavailable("data", f"{family}: no model with a d_model in the scores table "
                                  f"(width normalisation needs the width of each model)")
    if f.reason:
        raise Unavailable("data", f"{family}: {f.reason}")
    if f.n_null and math.isfinite(f.r_after) and f.r_after != 0:
        share = f.null_frac_positive if f.r_after > 0 else 1.0 - f.null_frac_positive
        ctx.fact("null_share", (f"the sign of r after width normalisation in {family}", share))
    return [f.r_before, f.r_after]


def claim_width_flip_count(ctx: AuditContext, families=(), d_ref=512.0):
    """(families whose r(HS, TQA) is negative before and positive after width normalisation, families)."""
    k = 0
    for f in families:
        before, after = claim_width(ctx, f, d_ref)
        k += int(before < 0 < after)
    return (k, len(families))


def claim_isocline(ctx: AuditContext, family="OPT", rule="above-positive", calibration="OLMo",
               exclude_calibration=False):
    """(intervals whose sign the isocline predicts, intervals) for one family."""
    from cape_hpc.analysis.isocline import isocline
    from cape_hpc.analysis.options import IsoclineOptions

    need_families(ctx.scores, [family], min_models=2)
    need_families(ctx.scores, [calibration], min_models=1, what=" (isocline calibration)")
    cal = ",".join(map(str, calibration)) if isinstance(calibration, (list, tuple)) else str(calibration)
    opts = IsoclineOptions(rule=rule, calibration=cal, exclude_calibration=exclude_calibration)
    r = ctx.cached(("iso", opts), lambda: isocline(ctx.scores, opts))
    f = {x.family: x for x in r.families}.get(family)
    return (0, 0) if f is None else (int(f.n_agree), int(f.n_intervals))


def claim_isocline_above(ctx: AuditContext, families=(), calibration="OLMo", b1="HS", b2="TQA"):
    """True when every model of the named families lies above B2_c = sqrt(k B1) (docs/METHODS.md §2.8,
    in fractions): each model's side by ``cape_hpc.analysis.isocline.predicted_sign`` (single-model
    families have no interval, so the per-interval sides of ``isocline`` cannot answer)."""
    from cape_hpc.analysis.isocline import calibrate_k, predicted_sign

    present, missing = families_present(ctx.scores, families, 1)
    k = calibrate_k(ctx.scores, b1, b2, calibration)[0]
    def sides(rows):
        return [predicted_sign(x / 100.0, y / 100.0, k, "above-positive")[0] == "above"
                for x, y in zip(rows[b1], rows[b2])]

    rows = ctx.scores.loc[ctx.scores["family"].isin(present)].dropna(subset=[b1, b2])
    above = all(sides(rows))
    every = sides(ctx.scores.dropna(subset=[b1, b2]))
    ctx.fact("base_rate", (f"the {len(rows)} named models above the isocline", len(rows), sum(every), len(every)))
    if not above:
        return False
    if missing:
        raise Unavailable("data", f"{', '.join(missing)} not in the scores table")
    return True


def claim_eigen(ctx: AuditContext, family="Pythia", mode="cumulative", matrix="correlation", width=4,
            quantity="lambda2", model=None, column="TQA", side=None, split_params=1e9):
    """'lambda2' at the window ending at ``model``; 'exponent' / 'r2' of the lambda2 power law;
    'e2_loading' of ``column`` averaged over windows ending below / above ``split_params`` (side)."""
    from cape_hpc.analysis.eigen import eigen_geometry
    from cape_hpc.analysis.options import EigenOptions

    need_families(ctx.scores, [family], min_models=3)
    opts = EigenOptions(family=family, mode=mode, matrix=matrix, width=width)
    r = ctx.cached(("eig", opts), lambda: eigen_geometry(ctx.scores, opts))
    if quantity == "lambda2":
        for w in r.windows:
            if w.last_model == model:
                return w.lambda2
        return math.nan
    if quantity == "exponent":
        return r.power_exponent
    if quantity == "r2":
        return r.power_r2
    if quantity == "e2_loading":
        j = r.columns.index(column)
        ws = [w for w in r.windows if (w.log10_n < math.log10(split_params)) == (side == "below")]
        return float(np.mean([w.e2[j] for w in ws])) if ws else math.nan
    raise OptionError(f"claims registry: unknown eigen quantity {quantity!r}")


def claim_fixed_point(ctx: AuditContext, family="OPT", at="mid"):
    from cape_hpc.analysis.fixedpoint import coupling_fixed_point
    from cape_hpc.analysis.options import FixedPointOptions

    need_families(ctx.scores, [family], min_models=4)
    r = coupling_fixed_point(ctx.scores, FixedPointOptions(family=family, at=at))
    ctx.fact("determined", ("the fixed-point line", r.n_points, 2))
    return r.gamma_star
