"""Claims about the fitted score dynamics (docs/METHODS.md §2.13): ODE fit / holdout errors against
the polynomial baselines, SINDy's active terms; each fit records its degeneracy facts."""
from __future__ import annotations

import math

import numpy as np

from cape_hpc.audit.computations.context import AuditContext, Unavailable, need_families
from cape_hpc.errors import OptionError


def _dyn(ctx, train, holdout, model, units, threshold, degree, benchmarks, derivative, include_start=False,
         anchor=False):
    from cape_hpc.dynamics import DynamicsOptions, discover
    from cape_hpc.io.scores import SCORE_COLUMNS

    need_families(ctx.scores, list(train) + list(holdout), min_models=2)
    opts = DynamicsOptions(train=tuple(train), holdout=tuple(holdout), model=model, units=units, threshold=threshold,
                           degree=degree, benchmarks=tuple(benchmarks) if benchmarks else SCORE_COLUMNS,
                           derivative=derivative, n_resamples=0, phase_pair=None, include_start=include_start,
                           anchor_baselines=anchor)
    return ctx.cached(("dyn", opts), lambda: discover(ctx.scores, opts))


def claim_dynamics(ctx: AuditContext, train=("Pythia",), holdout=("Llama-2",), model="sindy", units="fraction",
               threshold=0.1, degree=3, benchmarks=None, derivative="gradient", quantity="holdout",
               include_start=False, anchor=False, metric="rel_mae"):
    """Errors in percent: 'fit', 'holdout', 'poly<d>' (a baseline on the holdout), 'best_poly',
    'best_poly_degree', 'poly_over_ode' (best baseline error / ODE holdout error).  The ODE starts
    from each held-out family's true smallest model, so 'poly_over_ode' compares it with baselines
    anchored at that model (the same information, scored on the same cells: ``anchor`` is ignored).
    ``metric``: 'rel_mae' (mean |error| / mean score, a ratio of means) or 'mape' (mean of
    |error| / score over the cells)."""
    if metric not in ("rel_mae", "mape"):
        raise OptionError(f"claims registry: unknown error metric {metric!r} (rel_mae, mape)")
    if quantity == "poly_over_ode":
        anchor = True
    r = _dyn(ctx, tuple(train), tuple(holdout), model, units, threshold, degree, benchmarks, derivative,
             include_start, anchor)
    if quantity in ("fit", "holdout", "poly_over_ode"):
        _dyn_facts(ctx, r)
    base = {b.degree: 100 * getattr(b, metric) for b in r.baselines}
    valid = {d: v for d, v in base.items() if math.isfinite(v)}
    best_d = min(valid, key=valid.get) if valid else None
    ho = 100 * getattr(r.holdout_error, metric) if r.holdout_error else math.nan
    if quantity == "fit":
        return 100 * getattr(r.fit_error, metric)
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
    ctx.fact("coupling_terms", (f"the {r.model} ODE", coupling_terms(r.terms, r.benchmarks, r.coefficients)))
    n_rows = len(r.fit_predictions) // max(p, 1)
    n_par = int(max(r.n_active_terms)) if r.model == "sindy" else int(r.coefficients.shape[1])
    ctx.fact("determined", (f"each equation of the {r.model} ODE", n_rows, n_par))


def term_variables(term: str) -> set[str]:
    """The state variables of a library term ('1' -> none, 'HS^2 TQA' -> {HS, TQA})."""
    return set() if term == "1" else {part.split("^")[0] for part in term.split()}


def coupling_terms(terms: list[str], benchmarks: list[str], coefficients: np.ndarray) -> int:
    """Active terms (non-zero ``coefficients[j, k]``, shape [p, n_terms]) of equation j that involve a
    state variable other than ``benchmarks[j]``: the couplings an ODE of several scores claims."""
    return int(sum(1 for j, b in enumerate(benchmarks) for k, t in enumerate(terms)
                   if coefficients[j, k] != 0 and term_variables(t) - {b}))


def claim_sindy_terms(ctx: AuditContext, family="Pythia", units="fraction", threshold=0.1, degree=3,
                  quantity="range", factor=10.0, derivative="gradient"):
    """Active terms of the SINDy fit on one family: 'range' -> [min, max] per equation,
    'nonlinear' -> count of active terms of degree >= 2, 'stable' -> True when the support and
    signs are identical at threshold/sqrt(factor) and threshold*sqrt(factor) (a factor-x range) and
    the support at ``threshold`` is not empty."""
    from cape_hpc.dynamics import ODEOptions, make_model, trajectories
    from cape_hpc.io.scores import SCORE_COLUMNS

    need_families(ctx.scores, [family], min_models=3)
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


def claim_holdout_max(ctx: AuditContext, train=("Pythia",), min_models=3, model="sindy", units="fraction",
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
            errs.append(claim_dynamics(ctx, tuple(train), (f,), model, units, threshold, degree, None, derivative,
                                   "holdout"))
        except DataError:
            continue
    errs = [e for e in errs if math.isfinite(e)]
    if not errs:
        raise Unavailable("data", f"no family with >= {min_models} complete models to hold out")
    return max(errs)
