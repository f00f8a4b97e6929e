"""Reproduction audit (SPEC 2.15): recompute every quantitative claim of the paper from the data.

The registry ``data/claims.yaml`` lists each claim: ``id``, ``section``, ``gist``, ``paper`` (the
paper's value as printed, a string), ``method`` (what the paper states), ``inputs`` (what it names),
``compute`` (``fn`` and ``args``: the toolkit computation of the stated method) and
``alternatives`` (named ``args`` overrides: other estimators, stratification, units, subsets the paper
names).  Nothing in the registry is a result: every value in the audit table is computed here, by the
toolkit's analysis functions, from the tables passed in.

Paper values and tolerance (the paper's rounding):
- a number ``"-0.989"`` matches a computed value within half a unit of its last printed digit
  (``tolerance:`` in the registry overrides, e.g. "60x" rounded to tens); ``scale`` in ``compute``
  says what unit the computed value is reported in (e.g. billions of parameters, percent);
- ``"<1e-5"``, ``">0.78"``, ``"<=0.09"``, ``">=0.99"``: a bound;
- ``"6/7"``: an exact count pair (computed as (k, n));
- ``"true"``/``"false"``: a yes/no property;
- a list of these: every element must match.

Verdicts: ``reproduced`` (the stated method gives the paper's value), ``reproduced only with
<alternative>`` (the first listed alternative that does), ``not reproduced``, ``needs model
internals``, ``needs data not available`` (the named inputs are not in the tables given), and
``not computable (method not stated)``.  The last three come from a computation too: the claim's
function checks its inputs and raises ``Unavailable``.  Counting claims over a list of families
of which some are missing return a ``Partial`` range [count over available, + missing]: the claim is
``not reproduced`` when the paper's value lies outside that range, otherwise the missing data
decide it (``needs data not available``).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from cape_hpc.errors import DataError, OptionError
from cape_hpc.io.provenance import sha256_file
from cape_hpc.schema import Provenance

VERDICT_OK = "reproduced"
VERDICT_ALT = "reproduced only with"
VERDICT_NO = "not reproduced"
VERDICT_INTERNALS = "needs model internals"
VERDICT_DATA = "needs data not available"
VERDICT_METHOD = "not computable (method not stated)"
VERDICTS = (VERDICT_OK, VERDICT_ALT, VERDICT_NO, VERDICT_INTERNALS, VERDICT_DATA, VERDICT_METHOD)


class Unavailable(Exception):
    """A claim's inputs are not available: kind 'internals', 'data' or 'method'."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass
class Partial:
    """A count known only to lie in [lo, hi] because some named inputs are missing."""
    lo: float
    hi: float
    missing: list[str]


# ------------------------------------------------------------------------------------------------
# paper values

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass
class Target:
    kind: str              # 'num' | 'bound' | 'ratio' | 'bool'
    value: Any
    tol: float = 0.0
    op: str = ""

    def text(self) -> str:
        if self.kind == "num":
            return f"{self.value:g}"
        if self.kind == "bound":
            return f"{self.op}{self.value:g}"
        if self.kind == "ratio":
            return f"{self.value[0]}/{self.value[1]}"
        return str(self.value).lower()


def half_unit(text: str) -> float:
    """Half a unit of the last printed digit: '0.989' -> 0.0005, '3.5' -> 0.05, '14' -> 0.5, '1e-5' -> 5e-6."""
    t = text.strip().lstrip("+-")
    mant, _, exp = t.lower().partition("e")
    dec = len(mant.split(".")[1]) if "." in mant else 0
    return 0.5 * 10.0 ** (-dec + (int(exp) if exp else 0))


def parse_target(raw: Any, tolerance: float | None = None) -> Target:
    if isinstance(raw, bool):
        return Target("bool", raw)
    text = str(raw).strip().replace("\u2212", "-")
    low = text.lower()
    if low in ("true", "false", "yes", "no"):
        return Target("bool", low in ("true", "yes"))
    m = re.fullmatch(r"(<=|>=|<|>)\s*(" + _NUM + ")", text)
    if m:
        return Target("bound", float(m.group(2)), op=m.group(1))
    m = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text)
    if m:
        return Target("ratio", (int(m.group(1)), int(m.group(2))))
    m = re.fullmatch(_NUM, text)
    if m:
        return Target("num", float(text), tolerance if tolerance is not None else half_unit(text))
    raise DataError(f"claims registry: cannot parse paper value {raw!r}")


def _match_one(t: Target, v: Any) -> bool | None:
    """True / False, or None when the value is a Partial whose range still allows the target."""
    if isinstance(v, Partial):
        if t.kind == "num":
            lo_ok = v.lo - t.tol <= t.value <= v.hi + t.tol
            if not lo_ok:
                return False
            return True if v.lo == v.hi and abs(v.lo - t.value) <= t.tol else None
        return None
    if v is None:
        return False
    if t.kind == "bool":
        return bool(v) is t.value
    if t.kind == "ratio":
        try:
            return (int(v[0]), int(v[1])) == tuple(t.value)
        except (TypeError, ValueError, IndexError):
            return False
    try:
        fv = float(v)
    except (TypeError, ValueError):
        return False
    if not math.isfinite(fv):
        return False
    if t.kind == "num":
        return abs(fv - t.value) <= t.tol * (1 + 1e-9)
    return {"<": fv < t.value, "<=": fv <= t.value, ">": fv > t.value, ">=": fv >= t.value}[t.op]


def match(targets: list[Target], value: Any) -> bool | None:
    vals = value if len(targets) > 1 else [value]
    if not isinstance(vals, (list, tuple)) or len(vals) != len(targets):
        return False
    results = [_match_one(t, v) for t, v in zip(targets, vals)]
    if any(r is False for r in results):
        return False
    if any(r is None for r in results):
        return None
    return True


def fmt_value(v: Any) -> str:
    if isinstance(v, Partial):
        return f"[{v.lo:g}..{v.hi:g}] (missing: {', '.join(v.missing)})"
    if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, (int, np.integer)) for x in v):
        return f"{v[0]}/{v[1]}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt_value(x) for x in v) + "]"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if v is None:
        return "-"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    fv = float(v)
    if not math.isfinite(fv):
        return "nan"
    if fv != 0 and (abs(fv) < 1e-3 or abs(fv) >= 1e5):
        return f"{fv:.3g}"
    return f"{fv:.4g}"


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

    def cached(self, key, fn):
        if key not in self.cache:
            self.cache[key] = fn()
        return self.cache[key]


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


def _hashable(v):
    if isinstance(v, (list, tuple)):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


# ------------------------------------------------------------------------------------------------
# computations (each returns the value in the unit of the paper's number)

def c_pearson(ctx: AuditContext, b1="HS", b2="TQA", families=None, min_params=None, strict=False,
              phase=None, stat="r", p_method="analytic"):
    """Pearson r (stat='r'), its p-value ('p'), Spearman rho ('rho') or n ('n') over a set of models."""
    from cape_hpc.analysis.population import population_coupling

    df = ctx.scores
    if families is not None:
        _need_families(df, families)
        df = df.loc[df["family"].isin([families] if isinstance(families, str) else families)]
    if min_params is not None:
        df = df.loc[df["params"] > float(min_params)] if strict else df.loc[df["params"] >= float(min_params)]
    if phase is not None:
        res = population_coupling(ctx.scores if families is None else df, b1, b2, group_by="phase",
                                  p_method=p_method, seed=ctx.seed)
        g = {x.group: x for x in res.groups}.get(phase)
        if g is None:
            return math.nan
    else:
        if len(df) < 3:
            raise Unavailable("data", f"only {len(df)} model(s) in the set")
        g = population_coupling(df, b1, b2, p_method=p_method, seed=ctx.seed).groups[0]
    return {"r": g.pearson_r, "p": g.pearson_p if p_method == "analytic" else g.perm_pearson_p,
            "rho": g.spearman_rho, "n": g.n}[stat]


def c_gamma_logn_r(ctx: AuditContext, b1="HS", b2="TQA", stat="r"):
    """Pearson r of every defined local gamma against its midpoint log10 N (all families pooled)."""
    from cape_hpc.analysis.coupling import local_coupling
    from cape_hpc.analysis.population import correlate

    cr = local_coupling(ctx.scores, b1, b2)
    ivs = [iv for iv in cr.intervals if math.isfinite(iv.gamma)]
    g = correlate(np.array([iv.x_mid for iv in ivs]), np.array([iv.gamma for iv in ivs]))
    return {"r": g.pearson_r, "p": g.pearson_p, "n": g.n}[stat]


def _nc_result(ctx, families, estimator, pooled, stratify, units, bootstrap, attach="larger"):
    from cape_hpc.analysis.nc import estimate_nc

    key = ("nc", _hashable(families), estimator, pooled, stratify, units, bootstrap, attach, ctx.n_resamples,
           ctx.seed)
    return ctx.cached(key, lambda: estimate_nc(ctx.scores, estimator, families=families, pooled=pooled,
                                               stratify=stratify, units=units, bootstrap=bootstrap,
                                               n_resamples=ctx.n_resamples, seed=ctx.seed, attach=attach))


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
    if quantity == "none":
        return bool(not math.isfinite(est.log10_nc) and "positive at every interval" in est.reason)
    if quantity == "nc":
        return est.nc / 1e9
    if quantity == "median":
        return 10 ** est.bootstrap.median / 1e9
    lo, hi = est.bootstrap.interval(level)
    return 10 ** (lo if quantity == "ci_lo" else hi) / 1e9


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
    from cape_hpc.analysis.coupling import local_coupling
    return [iv.gamma for iv in local_coupling(ctx.scores, b1, b2, families=[family]).intervals
            if math.isfinite(iv.gamma)]


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
    from cape_hpc.analysis.coupling import local_coupling
    g = [iv.gamma for iv in local_coupling(ctx.scores, b1, b2).intervals if math.isfinite(iv.gamma)]
    return float(np.mean(np.array(g) > 0)) if g else math.nan


def c_gamma_at(ctx: AuditContext, model, b1="HS", b2="TQA", attach="larger"):
    """gamma of the interval ending at ``model`` (attach='larger') or starting at it ('smaller')."""
    from cape_hpc.analysis.coupling import local_coupling
    _need_models(ctx.scores, [model])
    fam = ctx.scores.loc[ctx.scores["model"] == model, "family"].iloc[0]
    for iv in local_coupling(ctx.scores, b1, b2, families=[fam]).intervals:
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


def c_deff(ctx: AuditContext, group="tax", matrix="covariance", quantity="d_eff", units="percent"):
    from cape_hpc.analysis.deff import effective_dimension

    df = ctx.scores
    if units == "fraction":
        from cape_hpc.io.scores import SCORE_COLUMNS
        df = df.copy()
        for c in SCORE_COLUMNS:
            df[c] = df[c] / 100.0
    key = ("deff", matrix, units)
    res = ctx.cached(key, lambda: effective_dimension(df, matrix=matrix, bootstrap=False))
    g = {x.group: x for x in res.groups}[group]
    return {"d_eff": g.d_eff, "n_models": g.n_models, "n_families": g.n_families}[quantity]


def c_loss(ctx: AuditContext, quantity="r2", n_scale=1e9, cv_ddof=0):
    from cape_hpc.analysis.losslaw import loss_law

    if ctx.loss is None:
        raise Unavailable("data", "no validation-loss table")
    r = ctx.cached(("loss", n_scale, cv_ddof), lambda: loss_law(ctx.loss, n_scale=n_scale, cv_ddof=cv_ddof))
    inv = np.array(r.invariant)
    return {"r2": r.r2, "cv_percent": 100 * r.cv, "invariant_mean": float(inv.mean()),
            "invariant_std": float(inv.std(ddof=cv_ddof)), "n": len(inv), "alpha": r.alpha}[quantity]


def _dyn(ctx, train, holdout, model, units, threshold, degree, benchmarks, derivative, include_start=False,
         anchor=False):
    from cape_hpc.dynamics.discovery import discover
    from cape_hpc.io.scores import SCORE_COLUMNS

    bench = tuple(benchmarks) if benchmarks else SCORE_COLUMNS
    _need_families(ctx.scores, list(train) + list(holdout), min_models=2)
    key = ("dyn", tuple(train), tuple(holdout), model, units, threshold, degree, bench, derivative, include_start,
           anchor)
    return ctx.cached(key, lambda: discover(ctx.scores, train=list(train), holdout=list(holdout), model=model,
                                            units=units, threshold=threshold, degree=degree, benchmarks=bench,
                                            derivative=derivative, n_resamples=0, phase_pair=None,
                                            include_start=include_start, anchor_baselines=anchor))


def c_dynamics(ctx: AuditContext, train=("Pythia",), holdout=("Llama-2",), model="sindy", units="fraction",
               threshold=0.1, degree=3, benchmarks=None, derivative="gradient", quantity="holdout",
               include_start=False, anchor=False):
    """Errors in percent: 'fit', 'holdout', 'poly<d>' (a baseline on the holdout), 'best_poly',
    'best_poly_degree', 'poly_over_ode' (best baseline error / ODE holdout error)."""
    r = _dyn(ctx, tuple(train), tuple(holdout), model, units, threshold, degree, benchmarks, derivative,
             include_start, anchor)
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


def c_sindy_terms(ctx: AuditContext, family="Pythia", units="fraction", threshold=0.1, degree=3,
                  quantity="range", factor=10.0, derivative="gradient"):
    """Active terms of the SINDy fit on one family: 'range' -> [min, max] per equation,
    'nonlinear' -> count of active terms of degree >= 2, 'stable' -> True when the support and
    signs are identical at threshold/sqrt(factor) and threshold*sqrt(factor) (a factor-x range) and
    the support at ``threshold`` is not empty."""
    from cape_hpc.dynamics.estimators import SindyODE
    from cape_hpc.dynamics.trajectories import trajectories
    from cape_hpc.io.scores import SCORE_COLUMNS

    _need_families(ctx.scores, [family], min_models=3)
    trs = trajectories(ctx.scores, [family], SCORE_COLUMNS)

    def fit(th):
        return SindyODE(degree=degree, threshold=th, units=units, derivative=derivative).fit(trs)

    m = fit(threshold)
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
                 quantity="b"):
    """HS -> TQA coupling coefficient per phase: 'phase_fit' = b of dTQA/dlogN = a + b HS_mid over
    the phase's intervals (SPEC 2.13); 'linear_ode' = the TQA<-HS entry of a dense linear ODE fitted
    on the phase's interval rows.  quantity 'b' or 'ratio' (|bonus| / |tax|)."""
    from cape_hpc.dynamics.discovery import phase_fits

    if families is not None:
        _need_families(ctx.scores, families, min_models=2)
    if quantity == "ratio":
        t = c_phase_coef(ctx, "tax", families, units, method)
        b = c_phase_coef(ctx, "bonus", families, units, method)
        return abs(b) / abs(t) if t else math.nan
    if method == "phase_fit":
        key = ("phasefit", _hashable(families), units)
        r = ctx.cached(key, lambda: phase_fits(ctx.scores, families=families, units=units))
        return {f.phase: f.b for f in r.fits}[phase]
    if method == "linear_ode":
        return _phase_linear_ode(ctx, phase, families, units)
    raise OptionError(f"claims registry: unknown phase method {method!r}")


def _phase_linear_ode(ctx, phase, families, units):
    from cape_hpc.analysis.coupling import local_coupling
    from cape_hpc.dynamics.estimators import LinearODE
    from cape_hpc.io.scores import SCORE_COLUMNS

    df = ctx.scores.dropna(subset=list(SCORE_COLUMNS))
    cr = local_coupling(df, "HS", "TQA", families=families)
    scale = 0.01 if units == "fraction" else 1.0
    by = df.set_index("model")
    S, D = [], []
    for iv in cr.intervals:
        if iv.phase != phase:
            continue
        a = by.loc[iv.prev_model, list(SCORE_COLUMNS)].to_numpy(float) * scale
        b = by.loc[iv.model, list(SCORE_COLUMNS)].to_numpy(float) * scale
        S.append(0.5 * (a + b))
        D.append((b - a) / (math.log10(iv.n) - math.log10(iv.prev_n)))
    if len(S) < 2:
        return math.nan
    m = LinearODE(units=units).fit_rows(np.array(S), np.array(D))
    return float(m.C_[list(SCORE_COLUMNS).index("TQA"), list(SCORE_COLUMNS).index("HS")])


def c_fixed_point(ctx: AuditContext, family="OPT", at="mid"):
    from cape_hpc.analysis.fixedpoint import coupling_fixed_point
    _need_families(ctx.scores, [family], min_models=4)
    return coupling_fixed_point(ctx.scores, family, at=at).gamma_star


def c_width(ctx: AuditContext, family="Pythia", d_ref=512.0):
    """[r before, r after] width normalisation of HS, TQA within one family."""
    from cape_hpc.analysis.width import width_normalisation
    _need_families(ctx.scores, [family], min_models=3)
    r = ctx.cached(("width", family, d_ref), lambda: width_normalisation(ctx.scores, d_ref=d_ref, n_permutations=100,
                                                                           seed=ctx.seed, families=[family]))
    f = {x.family: x for x in r.families}[family]
    if f.reason:
        raise Unavailable("data", f"{family}: {f.reason}")
    return [f.r_before, f.r_after]


def c_isocline(ctx: AuditContext, family="OPT", rule="above-positive", calibration="OLMo",
               exclude_calibration=False):
    """(intervals whose sign the isocline predicts, intervals) for one family."""
    from cape_hpc.analysis.isocline import isocline
    _need_families(ctx.scores, [family], min_models=2)
    _need_families(ctx.scores, [calibration], min_models=1, what=" (isocline calibration)")
    r = ctx.cached(("iso", rule, calibration, exclude_calibration),
                   lambda: isocline(ctx.scores, rule=rule, calibration=calibration,
                                    exclude_calibration=exclude_calibration))
    f = {x.family: x for x in r.families}.get(family)
    return (0, 0) if f is None else (int(f.n_agree), int(f.n_intervals))


def c_isocline_above(ctx: AuditContext, families=(), calibration="OLMo", b1="HS", b2="TQA"):
    """True when every model of the named families lies above B2_c = sqrt(k B1) (fractions).

    TODO(analysis): replace by a per-model side from ``cape_hpc.analysis.isocline`` (it reports
    sides per interval; single-model families have no interval)."""
    from cape_hpc.analysis.isocline import calibrate_k

    present, missing = _families_present(ctx.scores, families, 1)
    k = calibrate_k(ctx.scores, b1, b2, calibration)[0]
    rows = ctx.scores.loc[ctx.scores["family"].isin(present)].dropna(subset=[b1, b2])
    above = bool(np.all(rows[b2] / 100.0 > np.sqrt(k * rows[b1] / 100.0)))
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
    _need_families(ctx.scores, [family], min_models=3)
    r = ctx.cached(("eig", family, mode, matrix, width),
                   lambda: eigen_geometry(ctx.scores, family, mode=mode, matrix=matrix, width=width))
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

    if ctx.frontier is None:
        raise Unavailable("data", "no frontier table")
    fr = ctx.frontier
    if subset is not None:
        if "subset" not in fr.columns:
            raise Unavailable("data", "the frontier table has no 'subset' column")
        fr = fr.loc[fr["subset"] == subset]
    r = ctx.cached(("front", cohort, subset, min_lab_size),
                   lambda: frontier_fit(fr, cohort=cohort, min_lab_size=min_lab_size))
    if quantity == "n_labs":
        return int(fr.loc[fr["cohort"] == cohort, "lab"].nunique())
    return {"slope": r.slope, "intercept": r.intercept, "r": r.r, "p": r.p, "n": r.n,
            "lolo_mean": r.lolo_mae_mean, "lolo_std0": r.lolo_mae_std_ddof0, "lolo_std1": r.lolo_mae_std_ddof1,
            "n_lolo_labs": r.n_lolo_labs}[quantity]


def c_wilson(ctx: AuditContext, k=38, n=40, level=0.95):
    """Wilson score interval (percent) for k successes of n -- inputs are the paper's own counts.
    Computed by the toolkit's ``cape_hpc.steering.steer.wilson_interval`` (the intervention-rate CI)."""
    from scipy.stats import norm

    from cape_hpc.steering.steer import wilson_interval
    lo, hi = wilson_interval(int(k), int(n), z=float(norm.ppf(0.5 + level / 2)))
    return [100 * lo, 100 * hi]


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


def c_internals(ctx: AuditContext, models=(), quantity=""):
    """Claims about hidden states / heads / projections: computable only from internals results."""
    missing = list(models)
    if ctx.internals and os.path.exists(ctx.internals):
        import h5py
        with h5py.File(ctx.internals, "r") as f:
            have = set(f["internals"].keys()) if "internals" in f else set()
        missing = [m for m in models if m not in have]
        if not missing:
            raise Unavailable("internals", f"internals for {', '.join(models)} found, but the quantity "
                                           f"{quantity!r} is not computed by the audit yet")
    raise Unavailable("internals", f"needs hidden states of {', '.join(missing) or 'the models'} "
                                   f"(run `cape internals`, pass --internals FILE.h5)")


def c_external(ctx: AuditContext, what="", table=None):
    """Claims from data the project does not ship (gradients, checkpoints): a table must exist."""
    from cape_hpc.io.scores import DATA_DIR
    if table and (DATA_DIR / table).exists():
        raise Unavailable("data", f"{table} exists but the audit has no computation for {what!r} yet")
    raise Unavailable("data", f"needs {what}" + (f" (no {table} in {DATA_DIR})" if table else ""))


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
    "external": c_external, "not_stated": c_not_stated,
}


# ------------------------------------------------------------------------------------------------
# the registry and the audit

@dataclass
class Claim:
    id: str
    section: str
    gist: str
    paper: Any
    method: str
    inputs: list[str]
    fn: str
    args: dict
    alternatives: list[dict]
    tolerance: float | None = None
    note: str = ""


def default_registry() -> Path:
    from cape_hpc.io.scores import DATA_DIR
    return DATA_DIR / "claims.yaml"


def load_claims(path: str | os.PathLike | None = None) -> list[Claim]:
    import yaml

    path = Path(path) if path else default_registry()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({exc})") from None
    items = raw.get("claims") if isinstance(raw, dict) else raw
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a list of claims under 'claims'")
    out, seen = [], set()
    for i, c in enumerate(items):
        where = f"{path}: claim #{i + 1}"
        for k in ("id", "gist", "paper", "method", "compute"):
            if k not in c:
                raise DataError(f"{where}: missing field {k!r}")
        if c["id"] in seen:
            raise DataError(f"{where}: duplicate id {c['id']!r}")
        seen.add(c["id"])
        comp = c["compute"]
        if comp.get("fn") not in COMPUTE:
            raise DataError(f"{where} ({c['id']}): unknown compute fn {comp.get('fn')!r}")
        paper = c["paper"]
        for p in (paper if isinstance(paper, list) else [paper]):
            parse_target(p, c.get("tolerance"))
        alts = c.get("alternatives") or []
        for a in alts:
            if "name" not in a:
                raise DataError(f"{where} ({c['id']}): alternative without a name")
        out.append(Claim(str(c["id"]), str(c.get("section", "")), str(c["gist"]), paper, str(c["method"]),
                         [str(x) for x in (c.get("inputs") or [])], comp["fn"], dict(comp.get("args") or {}),
                         alts, c.get("tolerance"), str(c.get("note", ""))))
    return out


@dataclass
class AltOutcome:
    name: str
    value: str
    matches: bool | None
    reason: str


@dataclass
class ClaimOutcome:
    id: str
    section: str
    gist: str
    paper: str
    method: str
    value: str                # computed with the stated method ('-' when unavailable)
    verdict: str
    alternative: str          # the alternative that reproduces it, '' if none
    reason: str               # why unavailable / error text
    alternatives_tried: list[AltOutcome]


@dataclass
class AuditResult:
    claims: list[ClaimOutcome]
    counts: dict[str, int]
    registry: str
    provenance: Provenance


def _call(ctx, fn, args):
    """One computation; ``_each: {arg: [v1, v2]}`` and a list-valued ``quantity`` give a list."""
    args = dict(args)
    each = args.pop("_each", None)
    if each:
        (name, values), = each.items()
        return [_call(ctx, fn, {**args, name: v}) for v in values]
    q = args.get("quantity")
    if isinstance(q, (list, tuple)) and fn != "nc":
        return [_call(ctx, fn, {**args, "quantity": v}) for v in q]
    return COMPUTE[fn](ctx, **args)


def _evaluate(ctx, fn, args):
    try:
        return _call(ctx, fn, args), ""
    except Unavailable:
        raise
    except (DataError, OptionError) as exc:
        return None, f"error: {exc}"


def audit_claim(ctx: AuditContext, claim: Claim) -> ClaimOutcome:
    papers = claim.paper if isinstance(claim.paper, list) else [claim.paper]
    targets = [parse_target(p, claim.tolerance) for p in papers]
    paper_text = ", ".join(str(p) for p in papers)
    try:
        value, err = _evaluate(ctx, claim.fn, claim.args)
    except Unavailable as u:
        verdict = {"internals": VERDICT_INTERNALS, "data": VERDICT_DATA, "method": VERDICT_METHOD}[u.kind]
        return ClaimOutcome(claim.id, claim.section, claim.gist, paper_text, claim.method, "-", verdict, "",
                            u.reason, [])
    ok = match(targets, value) if not err else False
    tried = []
    if ok is True:
        return ClaimOutcome(claim.id, claim.section, claim.gist, paper_text, claim.method, fmt_value(value),
                            VERDICT_OK, "", err, tried)
    pending_data = ok is None
    found = ""
    for alt in claim.alternatives:
        args = {**claim.args, **(alt.get("args") or {})}
        fn = alt.get("fn", claim.fn)
        try:
            v, aerr = _evaluate(ctx, fn, args)
        except Unavailable as u:
            tried.append(AltOutcome(alt["name"], "-", None, u.reason))
            continue
        m = match(targets, v) if not aerr else False
        tried.append(AltOutcome(alt["name"], fmt_value(v), m, aerr))
        if m is True and not found:
            found = alt["name"]
            break
    if found:
        verdict = f"{VERDICT_ALT} {found}"
    elif pending_data:
        verdict = VERDICT_DATA
        err = err or (f"computed range {fmt_value(value)} contains the paper's value; the missing inputs decide")
    else:
        verdict = VERDICT_NO
    return ClaimOutcome(claim.id, claim.section, claim.gist, paper_text, claim.method, fmt_value(value), verdict,
                        found, err, tried)


def run_audit(scores: pd.DataFrame, *, frontier: pd.DataFrame | None = None, loss: pd.DataFrame | None = None,
              claims_path: str | os.PathLike | None = None, internals: str | None = None,
              n_resamples: int = 1000, seed: int = 0, only: list[str] | None = None) -> AuditResult:
    """Audit every claim of the registry against the given tables (see the module doc)."""
    claims = load_claims(claims_path)
    if only:
        unknown = sorted(set(only) - {c.id for c in claims})
        if unknown:
            raise OptionError(f"option 'claim': unknown claim id(s) {', '.join(unknown)}")
        claims = [c for c in claims if c.id in set(only)]
    ctx = AuditContext(scores, frontier, loss, internals, int(n_resamples), int(seed))
    outcomes = [audit_claim(ctx, c) for c in claims]
    counts: dict[str, int] = {}
    for o in outcomes:
        key = f"{VERDICT_ALT} an alternative" if o.verdict.startswith(VERDICT_ALT) else o.verdict
        counts[key] = counts.get(key, 0) + 1
    reg = Path(claims_path) if claims_path else default_registry()
    inputs = {"scores": str(scores.attrs.get("sha256", "")), "claims": sha256_file(reg)}
    if frontier is not None:
        inputs["frontier"] = str(frontier.attrs.get("sha256", ""))
    if loss is not None:
        inputs["loss"] = str(loss.attrs.get("sha256", ""))
    prov = Provenance("reproduce", {"n_resamples": int(n_resamples), "only": only, "internals": internals},
                      seed=int(seed), n_resamples=int(n_resamples), inputs=inputs)
    return AuditResult(outcomes, counts, str(reg), prov)
