"""Diagnose one model (docs/METHODS.md §2.14): where a model of given N (and optionally family,
d_model, scores) sits -- its local gamma against its family neighbours, its phase, its isocline
side, its h against the population line -- and which levers to try.

Two layers, so that the HTML report can recompute a diagnosis from a results file alone:

- ``fit_diagnose_model(df, opts) -> DiagnoseModel``: every coefficient the diagnosis needs (pair,
  units, min_delta, phase thresholds, population line beta1/beta0, isocline k and rule, d_ref) and
  the reference panel (model, family, log10 N, B1, B2).  A result of scalars and lists: it is stored
  in HDF5 (``/analysis/diagnose_model``) and rebuilt with ``DiagnoseModel.from_tree``.
- ``diagnose_point(model, params, ...) -> Diagnosis``: a pure function of the DiagnoseModel and the
  query (the query's scores are in the model's ``units``).

Choices where the paper is silent:
- scores, the population line, h and ``min_delta`` are in the chosen ``units`` (default percent, the
  tables' units); the isocline comparison converts to fractions;
- a query whose ``name`` is a panel model takes that model's missing scores/family from the panel
  and is compared with its neighbours without itself;
- neighbours: the largest panel model of the family with N below the query (``prev``) and the
  smallest above (``next``); gamma_prev = dB2/dB1 from prev to the query (the query's own interval,
  which sets its phase), gamma_next from the query to next.  The phase comes from gamma_prev; when
  that is undefined, from gamma_next (``phase_source='next interval'``); else from the isocline's
  predicted sign (``phase_source='isocline'``: bonus if positive, tax if negative);
- levers by phase: tax (negative coupling): data curation, width or targeted steering rather than
  more scale; transition (near zero): evaluate several checkpoints; bonus (positive): watch for
  saturation and rotate benchmarks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cape_kernels import gamma_rule

from cape_hpc.analysis._common import check_pair, complete_rows, provenance
from cape_hpc.analysis.coupling import gamma_reason
from cape_hpc.analysis.hfield import h_field
from cape_hpc.analysis.isocline import calibrate_k, predicted_sign
from cape_hpc.analysis.options import DiagnoseOptions, HFieldOptions
from cape_hpc.analysis.phases import classify_phase
from cape_hpc.analysis.scale import SCALE, on_scale
from cape_hpc.errors import OptionError
from cape_hpc.schema import Provenance, Result

LEVERS = {
    "tax": ["negative coupling: scaling one axis may degrade the other",
            "use data curation, more width, or targeted steering rather than more scale"],
    "transition": ["near-zero coupling: the model sits at a phase boundary where small recipe changes have "
                   "large effects", "evaluate several checkpoints before drawing conclusions"],
    "bonus": ["positive coupling: improvements reinforce each other",
              "watch for saturation of either benchmark and rotate to a new axis when it stops separating models"],
}


@dataclass
class DiagnoseModel(Result):
    b1: str
    b2: str
    units: str                # of the panel scores, the line, min_delta and a query's scores
    min_delta: float          # in `units`
    tax_below: float
    bonus_above: float
    beta1: float              # population line B2 = beta1 * B1 + beta0 (in `units`)
    beta0: float
    k: float                  # isocline constant (fractions)
    rule: str
    calibration: str
    d_ref: float
    panel_model: list[str]
    panel_family: list[str]
    panel_log10_n: list[float]
    panel_b1: list[float]     # in `units`
    panel_b2: list[float]
    provenance: Provenance

    def to_fraction(self, v: float) -> float:
        """A score in the model's units as a fraction (the isocline's units)."""
        return v / 100.0 if self.units == "percent" else v


@dataclass
class Diagnosis(Result):
    name: str
    family: str
    params: float
    log10_n: float
    units: str                # of b1, b2, isocline_b2 and h
    b1: float                 # NaN when not given
    b2: float
    prev_model: str
    gamma_prev: float
    next_model: str
    gamma_next: float
    gamma_reason: str
    phase: str                # 'tax' | 'transition' | 'bonus' | '' (unknown)
    phase_source: str         # 'own interval' | 'next interval' | 'isocline' | ''
    isocline_side: str        # 'above' | 'below' | ''
    isocline_b2: float        # B2 on the isocline at this B1 (in `units`)
    predicted_sign: int       # by the isocline rule (0 unknown)
    h: float                  # B2 - (beta1 B1 + beta0), in `units`
    width_factor: float       # d_model / d_ref (NaN unknown)
    levers: list[str]
    notes: list[str]
    provenance: Provenance


def fit_diagnose_model(df: pd.DataFrame, opts: DiagnoseOptions | None = None) -> DiagnoseModel:
    """Coefficients and reference panel for ``diagnose_point`` (in ``opts.units``)."""
    opts = opts or DiagnoseOptions()
    b1, b2 = opts.b1, opts.b2
    check_pair(df, b1, b2)
    hf = h_field(df, HFieldOptions(pair=opts.pair, group_by="family", units=opts.units))
    k, _, _, desc = calibrate_k(df, b1, b2, opts.calibration_value)
    panel, _ = complete_rows(df, (b1, b2))
    panel = on_scale(panel, opts)   # log10 N, or log10 step under --scale step (the query's size too)
    scale = opts.scale
    return DiagnoseModel(b1, b2, opts.units, opts.min_delta_resolved, opts.tax_below, opts.bonus_above, hf.beta1,
                         hf.beta0, k, opts.rule, desc, opts.d_ref,
                         panel["model"].astype(str).tolist(), panel["family"].astype(str).tolist(),
                         np.log10(panel[SCALE].to_numpy(float)).tolist(),
                         (panel[b1].to_numpy(float) * scale).tolist(), (panel[b2].to_numpy(float) * scale).tolist(),
                         provenance("diagnose_model", opts, {"scores": df}))


def _gamma(lo_b1, lo_b2, hi_b1, hi_b2, lo_x, hi_x, min_delta) -> tuple[float, str]:
    """(gamma, reason) of the interval from (lo_b1, lo_b2) at log10 N = lo_x to (hi_b1, hi_b2) at hi_x:
    the gamma rule of docs/METHODS.md §2.1 (``cape_kernels.gamma_rule``)."""
    gamma, code = gamma_rule(np.zeros(2, dtype=np.int64), np.array([lo_x, hi_x], dtype=np.float64),
                             np.array([lo_b1, hi_b1], dtype=np.float64), np.array([lo_b2, hi_b2], dtype=np.float64),
                             min_delta)
    return float(gamma[0]), gamma_reason(code[0], hi_b1 - lo_b1, min_delta)


def _neighbour_gammas(model: DiagnoseModel, family: str, name: str, x: float, v1: float, v2: float):
    """(previous model, its gamma to the query, next model, the query's gamma to it, reason): the
    query at log10 N = x with scores (v1, v2) placed among its family's panel models."""
    names = list(model.panel_model)
    fam = [j for j, f in enumerate(model.panel_family) if f == family and names[j] != name]
    fam.sort(key=lambda j: (model.panel_log10_n[j], names[j]))
    below = [j for j in fam if model.panel_log10_n[j] <= x]
    above = [j for j in fam if model.panel_log10_n[j] > x]
    prev_m = next_m = ""
    g_prev = g_next = math.nan
    g_reason = "smallest model of its family: no own interval"
    if below:
        j = below[-1]
        prev_m = names[j]
        g_prev, r = _gamma(model.panel_b1[j], model.panel_b2[j], v1, v2, model.panel_log10_n[j], x,
                           model.min_delta)
        g_reason = f"own interval: {r}" if r else ""
    if above:
        j = above[0]
        next_m = names[j]
        g_next, r = _gamma(v1, v2, model.panel_b1[j], model.panel_b2[j], x, model.panel_log10_n[j],
                           model.min_delta)
        if r:
            g_reason = "; ".join(filter(None, [g_reason, f"next interval: {r}"]))
    return prev_m, g_prev, next_m, g_next, g_reason


def diagnose_point(model: DiagnoseModel, params: float, *, family: str | None = None,
                   scores: dict[str, float] | None = None, d_model: float | None = None,
                   name: str = "") -> Diagnosis:
    """Diagnosis of one model (pure: uses only ``model`` and the arguments; scores in ``model.units``)."""
    try:
        params = float(params)
    except (TypeError, ValueError):
        raise OptionError(f"option '--params': {params!r} is not a number") from None
    if not math.isfinite(params):
        raise OptionError(f"option '--params': must be finite, got {params!r}")
    if params <= 0:
        raise OptionError(f"option '--params': must be > 0, got {params!r}")
    scores = dict(scores or {})
    notes: list[str] = []
    names = list(model.panel_model)
    if name and name in names:
        i = names.index(name)
        family = family or model.panel_family[i]
        scores.setdefault(model.b1, model.panel_b1[i])
        scores.setdefault(model.b2, model.panel_b2[i])
    v1 = float(scores[model.b1]) if scores.get(model.b1) is not None else math.nan
    v2 = float(scores[model.b2]) if scores.get(model.b2) is not None else math.nan
    x = math.log10(params)
    have = math.isfinite(v1) and math.isfinite(v2)
    prev_m = next_m = ""
    g_prev = g_next = math.nan
    g_reason = ""
    if family and family in set(model.panel_family) and have:
        prev_m, g_prev, next_m, g_next, g_reason = _neighbour_gammas(model, family, name, x, v1, v2)
    elif family and family not in set(model.panel_family):
        notes.append(f"family {family!r} is not in the reference panel: no local gamma")
    elif not family:
        notes.append("no family given: no local gamma")
    if not have:
        notes.append(f"{model.b1} and {model.b2} are needed for gamma, isocline side and h")
    side, ps, iso_b2, h = "", 0, math.nan, math.nan
    if have:
        f1 = model.to_fraction(v1)
        side, ps = predicted_sign(f1, model.to_fraction(v2), model.k, model.rule)
        iso_b2 = (100.0 if model.units == "percent" else 1.0) * math.sqrt(model.k * f1)
        h = v2 - (model.beta1 * v1 + model.beta0)
    phase, source = "", ""
    if math.isfinite(g_prev):
        phase, source = classify_phase(g_prev, model.tax_below, model.bonus_above), "own interval"
    elif math.isfinite(g_next):
        phase, source = classify_phase(g_next, model.tax_below, model.bonus_above), "next interval"
    elif ps:
        phase, source = ("bonus" if ps > 0 else "tax"), "isocline"
        notes.append("phase predicted from the isocline side (no family neighbour interval)")
    levers = list(LEVERS.get(phase, ["phase unknown: give the family and both scores"]))
    wf = float(d_model) / model.d_ref if d_model is not None and math.isfinite(float(d_model)) else math.nan
    if math.isfinite(wf):
        notes.append(f"width factor d_model / d_ref = {wf:.3g}")
    query = {"name": name, "params": params, "family": family or "", "scores": scores, "d_model": d_model}
    return Diagnosis(name, family or "", params, x, model.units, v1, v2, prev_m, g_prev, next_m, g_next, g_reason, phase or "",
                     source, side, iso_b2, ps, h, wf, levers, notes,
                     Provenance("diagnose", {**query, "model": model.provenance.options},
                                inputs=dict(model.provenance.inputs)))


def diagnose(df: pd.DataFrame, params: float, opts: DiagnoseOptions | None = None, *, family: str | None = None,
             scores: dict[str, float] | None = None, d_model: float | None = None, name: str = "") -> Diagnosis:
    """Fit the DiagnoseModel on ``df`` and diagnose one model."""
    return diagnose_point(fit_diagnose_model(df, opts), params, family=family, scores=scores, d_model=d_model,
                          name=name)
