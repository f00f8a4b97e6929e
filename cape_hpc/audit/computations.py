"""One function per claim kind (``compute.fn`` of ``data/claims.yaml``), calling the analyses (docs/METHODS.md §2.15).

Each function takes the :class:`AuditContext` (the tables, the bootstrap settings, a cache of
expensive results) and the claim's ``args``, and returns the value in the unit of the paper's number
(billions of parameters, percent, a count pair ...).  When its inputs are missing it raises
:class:`Unavailable` ('internals', 'data' or 'method'), which becomes the claim's verdict.  Counting
claims over a list of families of which some are missing return a ``Partial`` range.

The computations only call the public functions of ``cape_hpc.analysis``, ``cape_hpc.dynamics`` and
``cape_hpc.stats``, each with its declared options object.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from cape_hpc.audit.targets import Partial
from cape_hpc.errors import OptionError

__all__ = ["AuditContext", "Unavailable", "COMPUTE"]


class Unavailable(Exception):
    """A claim's inputs are not available: kind 'internals', 'data' or 'method'."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


# ------------------------------------------------------------------------------------------------
# context: the tables and a cache of expensive computations

@dataclass
class AuditContext:
    scores: pd.DataFrame
    frontier: pd.DataFrame | None = None
    loss: pd.DataFrame | None = None
    internals: str | None = None        # a results file with /internals/<model> groups
    n_resamples: int = 1000
    seed: int = 0
    cache: dict = field(default_factory=dict)
    facts: list = field(default_factory=list)   # what the current evaluation's fits were (degeneracy)
    checks: dict = field(default_factory=dict)  # the current claim's degeneracy thresholds

    def cached(self, key, fn):
        if key not in self.cache:
            self.cache[key] = fn()
        return self.cache[key]

    def fact(self, kind: str, value) -> None:
        """Record a fact about a fit or interval used (``cape_hpc.audit.degeneracy.reasons`` reads them)."""
        self.facts.append((kind, value))


def _families_present(df: pd.DataFrame, families, min_models: int = 1) -> tuple[list[str], list[str]]:
    fams = [families] if isinstance(families, str) else list(families)
    counts = df["family"].value_counts()
    present = [f for f in fams if counts.get(f, 0) >= min_models]
    return present, [f for f in fams if f not in present]


def _need_families(df, families, min_models=1, what="") -> list[str]:
    present, missing = _families_present(df, families, min_models)
    if missing:
        raise Unavailable("data", f"famil{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)} "
                                  f"with >= {min_models} model(s) not in the scores table{what}")
    return present


def _need_models(df, models) -> None:
    missing = [m for m in models if m not in set(df["model"])]
    if missing:
        raise Unavailable("data", f"model(s) {', '.join(missing)} not in the scores table")


def _coupling(ctx: AuditContext, b1="HS", b2="TQA", families=None, df=None):
    """The local coupling (docs/METHODS.md §2.1) of the scores table (or ``df``), cached per table."""
    from cape_hpc.analysis.coupling import local_coupling
    from cape_hpc.analysis.options import CouplingOptions

    fams = None if families is None else tuple([families] if isinstance(families, str) else families)
    opts = CouplingOptions(pair=(b1, b2), families=fams)
    if df is not None:
        return local_coupling(df, opts)
    return ctx.cached(("coupling", opts), lambda: local_coupling(ctx.scores, opts))


# ------------------------------------------------------------------------------------------------
# computations (each returns the value in the unit of the paper's number)

def c_pearson(ctx: AuditContext, b1="HS", b2="TQA", families=None, min_params=None, strict=False,
              phase=None, stat="r", p_method="analytic"):
    """Pearson r (stat='r'), its p-value ('p'), Spearman rho ('rho') or n ('n') over a set of models."""
    from cape_hpc.analysis.options import PopulationOptions
    from cape_hpc.analysis.population import population_coupling

    df = ctx.scores
    if families is not None:
        _need_families(df, families)
        df = df.loc[df["family"].isin([families] if isinstance(families, str) else families)]
    if min_params is not None:
        df = df.loc[df["params"] > float(min_params)] if strict else df.loc[df["params"] >= float(min_params)]
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


def c_gamma_logn_r(ctx: AuditContext, b1="HS", b2="TQA", stat="r"):
    """Pearson r of every defined local gamma against its midpoint log10 N (all families pooled)."""
    from cape_hpc.analysis.population import correlate

    cr = _coupling(ctx, b1, b2)
    ivs = [iv for iv in cr.intervals if math.isfinite(iv.gamma)]
    g = correlate(np.array([iv.x_mid for iv in ivs]), np.array([iv.gamma for iv in ivs]))
    return {"r": g.pearson_r, "p": g.pearson_p, "n": g.n}[stat]


def _nc_result(ctx, families, estimator, pooled, stratify, units, bootstrap, attach="larger"):
    from cape_hpc.analysis.nc import NcOptions, estimate_nc

    opts = NcOptions(estimator=estimator, families=None if families is None else tuple(families), pooled=pooled,
                     stratify=stratify, units=units, bootstrap=bootstrap, n_resamples=ctx.n_resamples,
                     seed=ctx.seed, attach=attach)
    return ctx.cached(("nc", opts), lambda: estimate_nc(ctx.scores, opts))


def c_nc(ctx: AuditContext, family="Pythia", estimator="gamma-fit", pooled=False, stratify=True,
         units="percent", quantity="nc", level=0.95, attach="larger"):
    """N_c in billions: quantity 'nc' (point), 'median', 'ci_lo', 'ci_hi', 'none' (True when no
    crossing because gamma is positive everywhere), or a list of these.  ``attach`` ('smaller' |
    'midpoint') moves the sign-change N to the interval's smaller model or geometric midpoint
    (``estimate_nc``'s option of the same name)."""
    if isinstance(quantity, (list, tuple)):
        return [c_nc(ctx, family, estimator, pooled, stratify, units, q, level, attach) for q in quantity]
    fams = None if family in (None, "all") else ([family] if isinstance(family, str) else list(family))
    if fams is not None:
        _need_families(ctx.scores, fams, min_models=3, what=" (N_c needs >= 3 models)")
    boot = quantity in ("median", "ci_lo", "ci_hi")
    res = _nc_result(ctx, fams, estimator, pooled, stratify, units, boot,
                     attach if estimator == "sign-change" else "larger")
    est = res.estimates[0] if pooled or len(res.estimates) == 1 else res.by_scope()[fams[0]]
    if estimator == "gamma-fit":
        ctx.fact("determined", (f"the gamma-fit line of {est.scope}", est.n_intervals, 2))
    elif estimator == "quadratic":
        ctx.fact("determined", (f"the quadratic of {est.scope}", est.n_models, 3))
    if boot:
        ctx.fact("interval", (f"N_c interval of {est.scope}", est.bootstrap))
    if est.extrapolated or (boot and est.bootstrap.extrapolated):
        ctx.fact("note", "extrapolated beyond the data (docs/METHODS.md §2.4)")
    if quantity == "none":
        return bool(not math.isfinite(est.log10_nc) and "positive at every interval" in est.reason)
    if quantity == "nc":
        return est.nc / 1e9
    if quantity == "median":
        return 10 ** est.bootstrap.median / 1e9
    ci = est.bootstrap.interval(level)
    return 10 ** (ci.low if quantity == "ci_lo" else ci.high) / 1e9


def c_nc_ratio(ctx: AuditContext, families=(), estimator="sign-change", attach="larger"):
    """max / min of the per-family N_c."""
    vals = [c_nc(ctx, f, estimator, attach=attach) for f in families]
    vals = [v for v in vals if isinstance(v, float) and math.isfinite(v) and v > 0]
    if len(vals) < 2:
        return math.nan
    return max(vals) / min(vals)


def c_count_models(ctx: AuditContext, families=None, complete_columns=None):
    """Number of models (rows) of the named families (all when None), as a list when several."""
    df = ctx.scores
    if complete_columns:
        df = df.dropna(subset=list(complete_columns))
    if families is None:
        return int(len(df))
    if isinstance(families, str):
        return int((df["family"] == families).sum())
    return [int((df["family"] == f).sum()) for f in families]


def c_count_families(ctx: AuditContext):
    return int(ctx.scores["family"].nunique())


def _gammas(ctx, family, b1="HS", b2="TQA"):
    return [iv.gamma for iv in _coupling(ctx, b1, b2, [family]).intervals if math.isfinite(iv.gamma)]


def c_sign_flip_count(ctx: AuditContext, families=()):
    """How many of the named families have gamma negative at small N and positive at large N
    (a negative interval followed later by a positive one).  Partial when families are missing."""
    present, missing = _families_present(ctx.scores, families, min_models=3)
    k = 0
    for f in present:
        g = _gammas(ctx, f)
        neg = [i for i, v in enumerate(g) if v < 0]
        if neg and any(v > 0 for v in g[neg[0]:]):
            k += 1
    if missing:
        return Partial(k, k + len(missing), missing)
    return k


def c_all_positive(ctx: AuditContext, families=(), b1="HS", b2="TQA"):
    """True when every defined gamma of every named family is > 0 (cooperative at all sizes)."""
    present, missing = _families_present(ctx.scores, families, min_models=2)
    ok = all(all(v > 0 for v in _gammas(ctx, f, b1, b2)) and _gammas(ctx, f, b1, b2) for f in present)
    if not ok:
        return False
    if missing:
        raise Unavailable("data", f"{', '.join(missing)}: fewer than 2 models in the scores table")
    return True


def c_fraction_positive(ctx: AuditContext, b1="HS", b2="ARC"):
    """Fraction of all defined intervals (every family) with gamma > 0."""
    g = [iv.gamma for iv in _coupling(ctx, b1, b2).intervals if math.isfinite(iv.gamma)]
    return float(np.mean(np.array(g) > 0)) if g else math.nan


def c_gamma_at(ctx: AuditContext, model, b1="HS", b2="TQA", attach="larger"):
    """gamma of the interval ending at ``model`` (attach='larger') or starting at it ('smaller')."""
    _need_models(ctx.scores, [model])
    fam = ctx.scores.loc[ctx.scores["model"] == model, "family"].iloc[0]
    for iv in _coupling(ctx, b1, b2, [fam]).intervals:
        if (attach == "larger" and iv.model == model) or (attach == "smaller" and iv.prev_model == model):
            return iv.gamma
    return math.nan


def c_max_gamma_at(ctx: AuditContext, models=(), attach="larger"):
    vals = [c_gamma_at(ctx, m, attach=attach) for m in models]
    return max(vals) if all(math.isfinite(v) for v in vals) else math.nan


def c_score(ctx: AuditContext, model, column="TQA"):
    _need_models(ctx.scores, [model])
    return float(ctx.scores.loc[ctx.scores["model"] == model, column].iloc[0])


def c_score_delta(ctx: AuditContext, a, b, column="HS"):
    return c_score(ctx, b, column) - c_score(ctx, a, column)


def c_deff(ctx: AuditContext, group="tax", matrix="covariance", quantity="d_eff", units="percent",
           width_normalised=False, d_ref=512.0):
    """d_eff (docs/METHODS.md §2.5) of one phase group, or its model / family count; quantity
    'decreasing' -> True when d_eff(tax) > d_eff(bonus) (the phases' order of the paper).
    ``width_normalised``: the scores divided by d_model / d_ref first (§2.6; rows without d_model
    left out; the phases are then those of the normalised scores' coupling)."""
    from cape_hpc.analysis.deff import DeffOptions, effective_dimension

    if quantity == "decreasing":
        vals = [c_deff(ctx, g, matrix, "d_eff", units, width_normalised, d_ref) for g in ("tax", "bonus")]
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


def c_loss(ctx: AuditContext, quantity="r2", n_scale=1e9, cv_ddof=0):
    from cape_hpc.analysis.losslaw import loss_law
    from cape_hpc.analysis.options import LossOptions

    if ctx.loss is None:
        raise Unavailable("data", "no validation-loss table")
    opts = LossOptions(n_scale=n_scale, cv_ddof=cv_ddof)
    r = ctx.cached(("loss", opts), lambda: loss_law(ctx.loss, opts))
    inv = np.array(r.invariant)
    return {"r2": r.r2, "cv_percent": 100 * r.cv, "invariant_mean": float(inv.mean()),
            "invariant_std": float(inv.std(ddof=cv_ddof)), "n": len(inv), "alpha": r.alpha}[quantity]


def _dyn(ctx, train, holdout, model, units, threshold, degree, benchmarks, derivative, include_start=False,
         anchor=False):
    from cape_hpc.dynamics import DynamicsOptions, discover
    from cape_hpc.io.scores import SCORE_COLUMNS

    _need_families(ctx.scores, list(train) + list(holdout), min_models=2)
    opts = DynamicsOptions(train=tuple(train), holdout=tuple(holdout), model=model, units=units, threshold=threshold,
                           degree=degree, benchmarks=tuple(benchmarks) if benchmarks else SCORE_COLUMNS,
                           derivative=derivative, n_resamples=0, phase_pair=None, include_start=include_start,
                           anchor_baselines=anchor)
    return ctx.cached(("dyn", opts), lambda: discover(ctx.scores, opts))


def c_dynamics(ctx: AuditContext, train=("Pythia",), holdout=("Llama-2",), model="sindy", units="fraction",
               threshold=0.1, degree=3, benchmarks=None, derivative="gradient", quantity="holdout",
               include_start=False, anchor=False):
    """Errors in percent: 'fit', 'holdout', 'poly<d>' (a baseline on the holdout), 'best_poly',
    'best_poly_degree', 'poly_over_ode' (best baseline error / ODE holdout error)."""
    r = _dyn(ctx, tuple(train), tuple(holdout), model, units, threshold, degree, benchmarks, derivative,
             include_start, anchor)
    if quantity in ("fit", "holdout", "poly_over_ode"):
        _dyn_facts(ctx, r)
    base = {b.degree: 100 * b.rel_mae for b in r.baselines}
    valid = {d: v for d, v in base.items() if math.isfinite(v)}
    best_d = min(valid, key=valid.get) if valid else None
    ho = 100 * r.holdout_error.rel_mae if r.holdout_error else math.nan
    if quantity == "fit":
        return 100 * r.fit_error.rel_mae
    if quantity == "holdout":
        return ho
    if quantity.startswith("poly") and quantity[4:].isdigit():
        return base.get(int(quantity[4:]), math.nan)
    if quantity == "best_poly":
        return valid[best_d] if best_d else math.nan
    if quantity == "best_poly_degree":
        return best_d
    if quantity == "poly_over_ode":
        return (valid[best_d] / ho) if best_d and ho > 0 else math.nan
    raise OptionError(f"claims registry: unknown dynamics quantity {quantity!r}")


def _dyn_facts(ctx: AuditContext, r) -> None:
    """Facts of an ODE fit: active terms per equation (sparse models), benchmarks predicted constant,
    observations per equation against parameters."""
    p = len(r.benchmarks)
    if r.model == "sindy":
        ctx.fact("active_terms", dict(zip(r.benchmarks, (int(k) for k in r.n_active_terms))))
    flat = []
    for j, b in enumerate(r.benchmarks):
        if not np.any(r.coefficients[j] != 0):
            flat.append(b)
    ctx.fact("zero_change", flat)
    n_rows = len(r.fit_predictions) // max(p, 1)
    n_par = int(max(r.n_active_terms)) if r.model == "sindy" else int(r.coefficients.shape[1])
    ctx.fact("determined", (f"each equation of the {r.model} ODE", n_rows, n_par))


def c_sindy_terms(ctx: AuditContext, family="Pythia", units="fraction", threshold=0.1, degree=3,
                  quantity="range", factor=10.0, derivative="gradient"):
    """Active terms of the SINDy fit on one family: 'range' -> [min, max] per equation,
    'nonlinear' -> count of active terms of degree >= 2, 'stable' -> True when the support and
    signs are identical at threshold/sqrt(factor) and threshold*sqrt(factor) (a factor-x range) and
    the support at ``threshold`` is not empty."""
    from cape_hpc.dynamics import ODEOptions, make_model, trajectories
    from cape_hpc.io.scores import SCORE_COLUMNS

    _need_families(ctx.scores, [family], min_models=3)
    trs = trajectories(ctx.scores, [family], SCORE_COLUMNS)

    def fit(th):
        return make_model(ODEOptions(model="sindy", degree=degree, threshold=th, units=units,
                                     derivative=derivative)).fit(trs)

    m = fit(threshold)
    ctx.fact("active_terms", dict(zip(SCORE_COLUMNS, (int(k) for k in m.active_terms_.sum(axis=1)))))
    if quantity == "range":
        k = m.active_terms_.sum(axis=1)
        return [int(k.min()), int(k.max())]
    if quantity == "nonlinear":
        deg = np.array([_term_degree(t) for t in m.terms_])
        return int(m.active_terms_[:, deg >= 2].sum())
    if quantity == "stable":
        if not m.active_terms_.any():
            return False  # an empty support is not a "selected structure"
        lo, hi = fit(threshold / math.sqrt(factor)), fit(threshold * math.sqrt(factor))
        return bool(np.array_equal(np.sign(lo.coef_), np.sign(hi.coef_))
                    and np.array_equal(np.sign(m.coef_), np.sign(lo.coef_)))
    raise OptionError(f"claims registry: unknown sindy quantity {quantity!r}")


def _term_degree(term: str) -> int:
    if term == "1":
        return 0
    d = 0
    for part in term.split():
        d += int(part.split("^")[1]) if "^" in part else 1
    return d


def c_phase_coef(ctx: AuditContext, phase="tax", families=None, units="fraction", method="phase_fit",
                 quantity="b", split="gamma"):
    """HS -> TQA coupling coefficient per phase: 'phase_fit' = b of dTQA/dlogN = a + b HS_mid over
    the phase's intervals (docs/METHODS.md §2.13); 'linear_ode' = the TQA<-HS entry of a dense linear ODE fitted
    on the phase's interval rows.  quantity 'b' or 'ratio' (|bonus| / |tax|)."""
    from cape_hpc.dynamics import PhaseFitOptions, phase_fits

    if families is not None:
        _need_families(ctx.scores, families, min_models=2)
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

    cr = _coupling(ctx, "HS", "TQA", families)
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
    cr = _coupling(ctx, "HS", "TQA", families, df=df)
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


def c_fixed_point(ctx: AuditContext, family="OPT", at="mid"):
    from cape_hpc.analysis.fixedpoint import coupling_fixed_point
    from cape_hpc.analysis.options import FixedPointOptions

    _need_families(ctx.scores, [family], min_models=4)
    r = coupling_fixed_point(ctx.scores, FixedPointOptions(family=family, at=at))
    ctx.fact("determined", ("the fixed-point line", r.n_points, 2))
    return r.gamma_star


def c_width(ctx: AuditContext, family="Pythia", d_ref=512.0):
    """[r before, r after] width normalisation of HS, TQA within one family."""
    from cape_hpc.analysis.options import WidthOptions
    from cape_hpc.analysis.width import width_normalisation

    _need_families(ctx.scores, [family], min_models=3)
    opts = WidthOptions(d_ref=d_ref, n_permutations=100, seed=ctx.seed, families=(family,))
    r = ctx.cached(("width", opts), lambda: width_normalisation(ctx.scores, opts))
    f = {x.family: x for x in r.families}[family]
    if f.reason:
        raise Unavailable("data", f"{family}: {f.reason}")
    return [f.r_before, f.r_after]


def c_isocline(ctx: AuditContext, family="OPT", rule="above-positive", calibration="OLMo",
               exclude_calibration=False):
    """(intervals whose sign the isocline predicts, intervals) for one family."""
    from cape_hpc.analysis.isocline import isocline
    from cape_hpc.analysis.options import IsoclineOptions

    _need_families(ctx.scores, [family], min_models=2)
    _need_families(ctx.scores, [calibration], min_models=1, what=" (isocline calibration)")
    cal = ",".join(map(str, calibration)) if isinstance(calibration, (list, tuple)) else str(calibration)
    opts = IsoclineOptions(rule=rule, calibration=cal, exclude_calibration=exclude_calibration)
    r = ctx.cached(("iso", opts), lambda: isocline(ctx.scores, opts))
    f = {x.family: x for x in r.families}.get(family)
    return (0, 0) if f is None else (int(f.n_agree), int(f.n_intervals))


def c_isocline_above(ctx: AuditContext, families=(), calibration="OLMo", b1="HS", b2="TQA"):
    """True when every model of the named families lies above B2_c = sqrt(k B1) (docs/METHODS.md §2.8,
    in fractions): each model's side by ``cape_hpc.analysis.isocline.predicted_sign`` (single-model
    families have no interval, so the per-interval sides of ``isocline`` cannot answer)."""
    from cape_hpc.analysis.isocline import calibrate_k, predicted_sign

    present, missing = _families_present(ctx.scores, families, 1)
    k = calibrate_k(ctx.scores, b1, b2, calibration)[0]
    rows = ctx.scores.loc[ctx.scores["family"].isin(present)].dropna(subset=[b1, b2])
    above = all(predicted_sign(x / 100.0, y / 100.0, k, "above-positive")[0] == "above"
                for x, y in zip(rows[b1], rows[b2]))
    if not above:
        return False
    if missing:
        raise Unavailable("data", f"{', '.join(missing)} not in the scores table")
    return True


def c_eigen(ctx: AuditContext, family="Pythia", mode="cumulative", matrix="correlation", width=4,
            quantity="lambda2", model=None, column="TQA", side=None, split_params=1e9):
    """'lambda2' at the window ending at ``model``; 'exponent' / 'r2' of the lambda2 power law;
    'e2_loading' of ``column`` averaged over windows ending below / above ``split_params`` (side)."""
    from cape_hpc.analysis.eigen import eigen_geometry
    from cape_hpc.analysis.options import EigenOptions

    _need_families(ctx.scores, [family], min_models=3)
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


def c_frontier(ctx: AuditContext, quantity="r", cohort="main", subset=None, min_lab_size=3):
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
    return {"slope": r.slope, "intercept": r.intercept, "r": r.r, "p": r.p, "n": r.n,
            "lolo_mean": r.lolo_mae_mean, "lolo_std0": r.lolo_mae_std_ddof0, "lolo_std1": r.lolo_mae_std_ddof1,
            "n_lolo_labs": r.n_lolo_labs}[quantity]


def c_wilson(ctx: AuditContext, k=38, n=40, level=0.95):
    """Wilson score interval (percent) for k successes of n -- inputs are the paper's own counts
    (``cape_hpc.stats.wilson_interval``, the steering intervention-rate interval, docs/METHODS.md §4)."""
    from cape_hpc.stats.intervals import wilson_interval

    ci = wilson_interval(int(k), int(n), float(level))
    return [100 * ci.low, 100 * ci.high]


def c_width_flip_count(ctx: AuditContext, families=(), d_ref=512.0):
    """(families whose r(HS, TQA) is negative before and positive after width normalisation, families)."""
    k = 0
    for f in families:
        before, after = c_width(ctx, f, d_ref)
        k += int(before < 0 < after)
    return (k, len(families))


def c_tqa_variant(ctx: AuditContext, variant="mc1"):
    """True when the scores table's TruthfulQA variant is ``variant``."""
    if "tqa_variant" not in ctx.scores.columns:
        raise Unavailable("data", "the scores table has no tqa_variant column")
    return bool((ctx.scores["tqa_variant"] == variant).all())


def _nc_log10(ctx: AuditContext, family: str) -> float:
    """log10 of a family's sign-change N_c (HS, TQA); -inf when gamma is positive everywhere, +inf
    when negative everywhere, NaN when the family has too few intervals or no single change."""
    gs = _gammas(ctx, family)
    if len(gs) < 2:
        return math.nan
    v = c_nc(ctx, family, "sign-change")
    if isinstance(v, float) and math.isfinite(v):
        return math.log10(v * 1e9)
    if all(g > 0 for g in gs):
        return -math.inf
    if all(g < 0 for g in gs):
        return math.inf
    return math.nan


def c_above_nc_positive(ctx: AuditContext, pairs=(("HS", "TQA"), ("WG", "TQA"), ("MMLU", "TQA")), split="scale"):
    """For each pair: the fraction of intervals with gamma > 0 among the intervals above their
    family's N_c (split 'scale': midpoint above the (HS, TQA) sign-change N_c; 'gamma': the
    intervals in the bonus phase of (HS, TQA)); the smallest fraction over the pairs."""
    fams = list(dict.fromkeys(ctx.scores["family"]))
    nc = {f: _nc_log10(ctx, f) for f in fams} if split == "scale" else {}
    ref = {(iv.family, iv.model): iv.phase for iv in _coupling(ctx, "HS", "TQA").intervals}
    fracs = []
    for b1, b2 in pairs:
        sel = []
        for iv in _coupling(ctx, b1, b2).intervals:
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


def c_exchange_rate(ctx: AuditContext, b1="HS", b2="TQA", subset="bonus", stat="ols"):
    """Points of ``b2`` per point of ``b1`` above N_c: 'ols' = least-squares slope of B2 on B1 over
    the models of the subset (pooled); 'mean_gamma' / 'median_gamma' over its intervals.  subset
    'bonus': intervals (and their larger models) in the bonus phase; 'above_nc': intervals whose
    midpoint lies above the family's sign-change N_c."""
    cr = _coupling(ctx, b1, b2)
    ivs = [iv for iv in cr.intervals if math.isfinite(iv.gamma)]
    if subset == "bonus":
        ivs = [iv for iv in ivs if iv.phase == "bonus"]
    else:
        nc = {f: _nc_log10(ctx, f) for f in dict.fromkeys(iv.family for iv in ivs)}
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
    return float(np.polyfit(rows[b1].to_numpy(float), rows[b2].to_numpy(float), 1)[0])


def c_n_layers(ctx: AuditContext, models=()):
    """The n_layers of each named model (a list); Unavailable when the table leaves any blank."""
    _need_models(ctx.scores, models)
    by = ctx.scores.set_index("model")["n_layers"]
    blank = [m for m in models if not np.isfinite(float(by[m]))]
    if blank:
        raise Unavailable("data", f"n_layers is blank in the scores table for {', '.join(blank)}")
    return [int(by[m]) for m in models]


def c_holdout_max(ctx: AuditContext, train=("Pythia",), min_models=3, model="sindy", units="fraction",
                  threshold=0.1, degree=3, derivative="gradient"):
    """The largest ODE holdout error (percent) over every family (not trained on) with at least
    ``min_models`` complete models: the ODE fitted on ``train`` integrated from each family's
    smallest model."""
    from cape_hpc.errors import DataError
    from cape_hpc.io.scores import SCORE_COLUMNS

    df = ctx.scores.dropna(subset=list(SCORE_COLUMNS))
    counts = df["family"].value_counts()
    fams = [f for f in dict.fromkeys(df["family"]) if counts[f] >= min_models and f not in set(train)]
    errs = []
    for f in fams:
        try:
            errs.append(c_dynamics(ctx, tuple(train), (f,), model, units, threshold, degree, None, derivative,
                                   "holdout"))
        except DataError:
            continue
    errs = [e for e in errs if math.isfinite(e)]
    if not errs:
        raise Unavailable("data", f"no family with >= {min_models} complete models to hold out")
    return max(errs)


def c_internals(ctx: AuditContext, models=(), quantity=""):
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


def c_external(ctx: AuditContext, what="", table=None):
    """Claims from data the project does not ship (gradients, checkpoints): a table must exist."""
    from cape_hpc.io.data import data_dir
    if table and (data_dir() / table).exists():
        raise Unavailable("data", f"{table} exists but the audit has no computation for {what!r} yet")
    raise Unavailable("data", f"needs {what}" + (f" (no {table} in {data_dir()})" if table else ""))


def c_not_stated(ctx: AuditContext, what=""):
    raise Unavailable("method", what)


COMPUTE: dict[str, Callable] = {
    "pearson": c_pearson, "gamma_logn_r": c_gamma_logn_r, "nc": c_nc, "nc_ratio": c_nc_ratio,
    "count_models": c_count_models, "count_families": c_count_families, "sign_flip_count": c_sign_flip_count,
    "all_positive": c_all_positive, "fraction_positive": c_fraction_positive, "gamma_at": c_gamma_at,
    "max_gamma_at": c_max_gamma_at, "score": c_score, "score_delta": c_score_delta, "deff": c_deff,
    "loss": c_loss, "dynamics": c_dynamics, "sindy_terms": c_sindy_terms, "phase_coef": c_phase_coef,
    "fixed_point": c_fixed_point, "width": c_width, "width_flip_count": c_width_flip_count,
    "tqa_variant": c_tqa_variant, "isocline": c_isocline, "isocline_above": c_isocline_above,
    "eigen": c_eigen, "frontier": c_frontier, "wilson": c_wilson, "internals": c_internals,
    "above_nc_positive": c_above_nc_positive, "exchange_rate": c_exchange_rate, "n_layers": c_n_layers,
    "holdout_max": c_holdout_max,
    "external": c_external, "not_stated": c_not_stated,
}


# ------------------------------------------------------------------------------------------------
# one call of a claim's computation

def evaluate(ctx: AuditContext, fn: str, args: dict) -> Any:
    """One computation; ``_each: {arg: [v1, v2]}`` and a list-valued ``quantity`` give a list."""
    args = dict(args)
    each = args.pop("_each", None)
    if each:
        (name, values), = each.items()
        return [evaluate(ctx, fn, {**args, name: v}) for v in values]
    q = args.get("quantity")
    if isinstance(q, (list, tuple)) and fn != "nc":
        return [evaluate(ctx, fn, {**args, "quantity": v}) for v in q]
    return COMPUTE[fn](ctx, **args)
