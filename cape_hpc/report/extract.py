"""Chart data from a results file: one extractor per figure, shared by matplotlib and the HTML report.

Each extractor takes a :class:`~cape_hpc.report.data.Results` (whose groups are already decoded
into their result classes, see ``report/layout.py``), reads the typed attributes of those results
and returns a plain dict of lists (JSON-ready after ``data.jsonable``), or raises ``Skip`` with a
note naming the missing group.  The figure functions (``figures.py``) and the interactive charts
(``html.py``) draw the same data, so the PNGs and the report never disagree.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from cape_hpc.report.data import Results, Skip, boot_interval, ci_bounds
from cape_hpc.report.layout import (GROUPS, CouplingResult, DeffResult, DynamicsResult, EigenResult,
                                    FrontierResult, HFieldResult, InternalsResult, IsoclineResult,
                                    LossLawResult, NcResult, PhaseResult, PredictResult, SteeringOutcomeResult,
                                    SteeringResult,
                                    WidthResult)

PHASE_ORDER = ("tax", "transition", "bonus")
PHASE_COLORS = {"tax": "#d62728", "transition": "#7f7f7f", "bonus": "#2ca02c", "": "#1f77b4",
                "undefined": "#1f77b4"}


def _none(cls: type, res: Results, what: str = "") -> Skip:
    return Skip(f"no {GROUPS[cls]} group ({cls.__name__}) in {res.path}" + (f" ({what})" if what else ""))


# --------------------------------------------------------------------------- scores per model

def _coupling(res: Results) -> CouplingResult:
    cp = res.get("/analysis/coupling", CouplingResult)
    if not cp.intervals:
        raise Skip("/analysis/coupling has no intervals (no family with two sizes)")
    return cp


def model_points(res: Results) -> dict[str, Any]:
    """Per-model (family, model, N, B1, B2, phase), rebuilt from the coupling intervals.

    Each interval stores d_b1 and b1_mid (mean of its two models), so B1 = b1_mid +- d_b1/2 for the
    larger / smaller model; the phase of a model is its interval's phase (the smallest has none),
    or its phase in ``/analysis/phases`` when that group is stored.
    """
    cp = _coupling(res)
    ph = res.optional("/analysis/phases", PhaseResult)
    phase_of = {m.model: m.phase for m in ph.models} if ph is not None else {}
    fams: dict[str, dict[str, dict]] = {}
    for iv in cp.intervals:
        rows = fams.setdefault(iv.family, {})
        rows.setdefault(iv.prev_model, {"model": iv.prev_model, "N": iv.prev_n, "b1": iv.b1_mid - iv.d_b1 / 2,
                                        "b2": iv.b2_mid - iv.d_b2 / 2, "phase": phase_of.get(iv.prev_model, "")})
        rows[iv.model] = {"model": iv.model, "N": iv.n, "b1": iv.b1_mid + iv.d_b1 / 2, "b2": iv.b2_mid + iv.d_b2 / 2,
                          "phase": phase_of.get(iv.model, iv.phase)}
    out = []
    for fam, rows in fams.items():
        rs = sorted(rows.values(), key=lambda r: (r["N"], r["model"]))
        out.append({"family": fam, "model": [r["model"] for r in rs], "N": [r["N"] for r in rs],
                    "b1": [r["b1"] for r in rs], "b2": [r["b2"] for r in rs],
                    "phase": [r["phase"] for r in rs]})
    return {"b1": cp.b1, "b2": cp.b2, "units": cp.units, "families": out,
            "source": "/analysis/coupling" + (" + /analysis/phases" if ph is not None else "")}


def phase_diagram(res: Results) -> dict[str, Any]:
    return model_points(res)


# --------------------------------------------------------------------------- running coupling

def nc_entries(res: Results) -> list[dict]:
    """Every N_c estimate of every stored NcResult (``/analysis/nc/<key>``), as rows."""
    out = []
    for path, r in res.find(NcResult, "/analysis/nc"):
        for e in r.estimates:
            lo, hi = boot_interval(e.bootstrap, 0.95)
            out.append({"family": e.scope, "estimator": e.estimator, "log_nc": float(e.log10_nc), "lo": lo,
                        "hi": hi, "valid": math.isfinite(e.log10_nc), "path": path})
    return out


def running_gamma(res: Results) -> dict[str, Any]:
    cp = _coupling(res)
    fams: dict[str, dict[str, list]] = {}
    for iv in cp.intervals:
        f = fams.setdefault(iv.family, {"x": [], "gamma": [], "phase": [], "model": []})
        f["x"].append(iv.x_mid)
        f["gamma"].append(iv.gamma)
        f["phase"].append(iv.phase)
        f["model"].append(iv.model)
    nc = nc_entries(res)
    return {"b1": cp.b1, "b2": cp.b2, "tax_below": cp.tax_below, "bonus_above": cp.bonus_above,
            "families": [{"family": k, **v} for k, v in fams.items()], "nc": nc,
            "note": "" if nc else "no /analysis/nc/<estimator> group: N_c estimates not drawn",
            "source": "/analysis/coupling" + (" + /analysis/nc" if nc else "")}


# --------------------------------------------------------------------------- d_eff per phase

def deff_per_phase(res: Results) -> dict[str, Any]:
    r = res.get("/analysis/deff", DeffResult)
    if not r.groups:
        raise Skip("/analysis/deff has no groups")
    rows = []
    for g in r.groups:
        lo, hi = boot_interval(g.bootstrap, 0.95)
        rows.append({"phase": g.group, "d_eff": g.d_eff, "lo": lo, "hi": hi, "n_models": g.n_models})
    return {"rows": rows, "matrix": r.matrix, "source": "/analysis/deff"}


# --------------------------------------------------------------------------- width normalisation

def width_normalisation(res: Results) -> dict[str, Any]:
    r = res.get("/analysis/width", WidthResult)
    if not r.families:
        raise Skip("/analysis/width has no families")
    rows = [{"family": f.family, "r_before": f.r_before, "r_after": f.r_after, "null_mean": f.null_mean,
             "null_lo": f.null_q025, "null_hi": f.null_q975, "p_value": f.p_null} for f in r.families]
    return {"rows": rows, "d_ref": r.d_ref, "source": "/analysis/width"}


# --------------------------------------------------------------------------- frontier

def frontier(res: Results) -> dict[str, Any]:
    r = res.get("/analysis/frontier", FrontierResult)
    if not r.h:
        raise Skip("/analysis/frontier has no per-model h")
    pts = {"model": [m.model for m in r.h], "lab": [m.group for m in r.h], "x": [m.b1 for m in r.h],
           "y": [m.b2 for m in r.h], "h": [m.h for m in r.h],
           "cohort": ["fit" if m.in_fit else "not in fit" for m in r.h]}
    return {"x_name": r.b1, "y_name": r.b2, "points": pts, "slope": r.slope, "intercept": r.intercept,
            "r": r.r, "cohort": r.cohort, "source": "/analysis/frontier"}


# --------------------------------------------------------------------------- dynamics

def _trajectories(path: str, d: DynamicsResult) -> list[dict]:
    """Actual vs ODE (and each polynomial baseline) per held-out family, [sizes, benchmarks]."""
    out = []
    predictors = list(dict.fromkeys(r.predictor for r in d.predictions))
    for fam in dict.fromkeys(r.family for r in d.predictions):
        x, _, A, P = d.trajectory(fam, "ode")
        base = {p: d.trajectory(fam, p)[3].tolist() for p in predictors if p != "ode"}
        label = f"{d.model}: train {'+'.join(d.train)}, holdout {fam}"
        out.append({"label": label, "path": path, "x": x.tolist(), "benchmarks": list(d.benchmarks),
                    "actual": A.tolist(), "predicted": P.tolist(), "baselines": base})
    return out


def _errors(path: str, d: DynamicsResult) -> list[dict]:
    """Holdout error of the ODE beside every polynomial baseline (relative MAE)."""
    out = []
    if d.holdout_error is not None:
        he = d.holdout_error
        out.append({"label": f"ODE ({d.model})", "error": he.rel_mae, "path": path, "mape": he.mape,
                    "mae_points": he.mae_points})
    for b in d.baselines:
        out.append({"label": f"poly deg {b.degree}", "error": b.rel_mae, "path": path, "mape": b.mape,
                    "mae_points": b.mae_points})
    return out


def dynamics(res: Results) -> dict[str, Any]:
    """ODE trajectories (actual vs predicted) and the holdout error beside the polynomial baselines."""
    found = res.find(DynamicsResult, "/dynamics")
    if not found:
        raise _none(DynamicsResult, res, "cape dynamics --out")
    trajectories, errors = [], []
    for path, d in found:
        trajectories += _trajectories(path, d)
        errors += _errors(path, d)
    if not trajectories and not errors:
        raise Skip(f"{found[0][0]} has no holdout predictions (no --holdout family)")
    return {"trajectories": trajectories, "errors": errors, "source": "/dynamics"}


def predictions(res: Results) -> dict[str, Any]:
    """Stored PredictResults (``cape predict --out``): start scores, the ODE's prediction with its 95% bootstrap band, and
    the polynomial baselines, per benchmark."""
    found = res.find(PredictResult, "/dynamics/predict")
    if not found:
        raise _none(PredictResult, res, "cape predict --out")
    out = []
    for path, p in found:
        cis = [p.interval(b, 0.95) for b in p.benchmarks]
        lo, hi = [ci.low for ci in cis], [ci.high for ci in cis]
        out.append({"label": f"{p.family} at N = {p.size:.3g} (from {p.start_model}, {p.model})", "path": path,
                    "benchmarks": list(p.benchmarks), "start": list(p.start_scores), "ode": list(p.ode),
                    "lo": lo, "hi": hi, "baselines": {k: list(v) for k, v in p.baselines.items()}})
    return {"predictions": out, "source": "/dynamics/predict"}


# --------------------------------------------------------------------------- internals

def internals(res: Results) -> dict[str, Any]:
    found = res.find(InternalsResult, "/internals")
    if not found:
        raise _none(InternalsResult, res, "cape internals --out")
    out = []
    for path, r in found:
        if not r.layers:
            continue
        heads = r.head_coupling if "heads" in r.taps else None  # rows exist (NaN) even when untapped
        out.append({"model": path.rsplit("/", 1)[-1], "path": path,
                    "layer_coupling": r.layer_coupling.tolist(),
                    "layer_pairwise_mean": r.layer_pairwise_mean.tolist(),
                    "layer_competing_fraction": r.layer_competing_fraction.tolist(),
                    "d_rep": r.d_rep.tolist(),
                    "head_coupling": heads.tolist() if heads is not None else None,
                    "complete": r.complete})
    if not out:
        raise Skip("every /internals/<model> group has no layers (the residual tap was off)")
    return {"models": out, "source": "/internals"}


# --------------------------------------------------------------------------- steering

def steering(res: Results) -> dict[str, Any]:
    found = res.find(SteeringResult, "/steering")
    if not found:
        raise _none(SteeringResult, res, "cape steer --out")
    rows = []
    for path, s in found:
        lo, hi = ci_bounds(s.rate_ci)
        rows.append({"model": s.model, "run": path.rsplit("/", 1)[-1], "alpha": s.alpha, "rate": s.rate,
                     "lo": lo, "hi": hi, "level": s.rate_ci.level, "n": s.n_prompts, "n_changed": s.n_changed,
                     "scale": s.scale})
    rows.sort(key=lambda r: (r["model"], r["alpha"], r["run"]))
    return {"rows": rows, "source": "/steering"}


def steering_dose(res: Results) -> dict[str, Any]:
    """The held-out dose-response of every outcome run: per (model, layer) the correction and damage
    rates against alpha with their Wilson intervals, and the chosen operating point."""
    found = res.find(SteeringOutcomeResult, "/steering")
    if not found:
        raise _none(SteeringOutcomeResult, res, "cape steer --out")
    rows, chosen = [], []
    for path, s in found:
        for p in s.points:
            clo, chi = ci_bounds(p.correction_ci)
            dlo, dhi = ci_bounds(p.damage_ci)
            rows.append({"model": s.model, "layer": p.layer, "alpha": p.alpha, "accuracy": p.accuracy,
                         "correction": p.correction_rate, "correction_lo": clo, "correction_hi": chi,
                         "damage": p.damage_rate, "damage_lo": dlo, "damage_hi": dhi, "kl": p.kl,
                         "n_corrected": p.n_corrected, "n_base_wrong": p.n_base_wrong, "n_damaged": p.n_damaged,
                         "n_base_right": p.n_base_right, "mcnemar_p": p.mcnemar_p, "group": path})
        if s.chosen is not None:
            chosen.append({"model": s.model, "layer": s.chosen_layer, "alpha": s.chosen_alpha,
                           "correction": s.chosen.correction_rate, "rule": s.rule})
    return {"rows": rows, "chosen": chosen, "level": found[0][1].level, "source": "/steering"}


# --------------------------------------------------------------------------- extra analyses

def isocline(res: Results) -> dict[str, Any]:
    r = res.get("/analysis/isocline", IsoclineResult)
    if not r.intervals or not math.isfinite(r.k):
        raise Skip("/analysis/isocline has no intervals or no finite k")
    b1 = [iv.b1_mid for iv in r.intervals]
    lo, hi = np.nanmin(b1), np.nanmax(b1)
    curve_x = np.linspace(max(lo - 0.05, 1e-6), min(hi + 0.05, 1.0), 60)
    return {"b1": r.b1, "b2": r.b2, "k": r.k, "rule": r.rule, "calibration": r.calibration,
            "total_agree": r.total_agree, "total_intervals": r.total_intervals,
            "rows": [{"family": iv.family, "model": iv.model, "b1_mid": iv.b1_mid, "b2_mid": iv.b2_mid,
                      "side": iv.side, "gamma": iv.gamma, "agrees": iv.agrees} for iv in r.intervals],
            "curve_x": curve_x.tolist(), "curve_y": np.sqrt(r.k * curve_x).tolist(), "source": "/analysis/isocline"}


def hfield(res: Results) -> dict[str, Any]:
    r = res.get("/analysis/hfield", HFieldResult)
    if not r.groups:
        raise Skip("/analysis/hfield has no groups")
    return {"b1": r.b1, "b2": r.b2, "group_by": r.group_by, "beta1": r.beta1, "beta0": r.beta0,
            "units": r.units,
            "rows": [{"group": g.group, "count": g.count, "mean_h": g.mean_h, "std_h": g.std_h} for g in r.groups],
            "source": "/analysis/hfield"}


def loss_law(res: Results) -> dict[str, Any]:
    r = res.get("/analysis/loss", LossLawResult)
    if not r.params:
        raise Skip("/analysis/loss has no models")
    return {"params": list(r.params), "val_loss": list(r.val_loss), "fitted": list(r.fitted),
            "models": list(r.models), "E": r.E, "A": r.A, "alpha": r.alpha, "alpha_se": r.alpha_se, "r2": r.r2,
            "cv": r.cv, "source": "/analysis/loss"}


def eigen(res: Results) -> dict[str, Any]:
    r = res.get("/analysis/eigen", EigenResult)
    if not r.windows:
        raise Skip("/analysis/eigen has no windows")
    return {"family": r.family, "mode": r.mode, "matrix": r.matrix,
            "rows": [{"last_model": w.last_model, "log10_n": w.log10_n, "lambda1": w.lambda1, "lambda2": w.lambda2,
                      "e2_angle_deg": w.e2_angle_deg, "n_models": w.n_models} for w in r.windows],
            "power_exponent": r.power_exponent, "power_r2": r.power_r2, "source": "/analysis/eigen"}


EXTRACTORS: dict[str, Callable[[Results], dict]] = {
    "phase_diagram": phase_diagram,
    "running_gamma": running_gamma,
    "deff": deff_per_phase,
    "width": width_normalisation,
    "dynamics": dynamics,
    "frontier": frontier,
    "internals": internals,
    "steering": steering,
    "steering_dose": steering_dose,
    "predict": predictions,
    "isocline": isocline,
    "hfield": hfield,
    "loss": loss_law,
    "eigen": eigen,
}
