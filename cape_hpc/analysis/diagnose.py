"""Diagnose one model (SPEC 2.14): where a model of given N (and optionally family, d_model,
scores) sits -- its local gamma against its family neighbours, its phase, its isocline side, its h
against the population line -- and which levers to try.

Two layers, so that the HTML report can recompute a diagnosis from a results file alone:

- ``fit_diagnose_model(df, ...) -> DiagnoseModel``: every coefficient the diagnosis needs (pair,
  min_delta, phase thresholds, population line beta1/beta0, isocline k and rule, d_ref) and the
  reference panel (model, family, log10 N, B1, B2).  A plain dataclass of scalars and lists: it is
  stored as-is in HDF5 (``/analysis/diagnose/model``) and rebuilt with ``DiagnoseModel.from_tree``.
- ``diagnose_point(model, n, ...) -> Diagnosis``: a pure function of the DiagnoseModel and the query.

Choices where SPEC is silent:
- scores are in percent (the tables' units); the isocline comparison converts to fractions;
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
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from cape_hpc.analysis._common import check_finite, check_pair, complete_rows, provenance
from cape_hpc.analysis.coupling import DEFAULT_MIN_DELTA_POINTS
from cape_hpc.analysis.hfield import h_field
from cape_hpc.analysis.isocline import RULES, calibrate_k, predicted_sign
from cape_hpc.analysis.phases import check_thresholds, classify_phase
from cape_hpc.analysis.width import D_REF
from cape_hpc.errors import OptionError
from cape_hpc.schema import Provenance

LEVERS = {
    "tax": ["negative coupling: scaling one axis may degrade the other",
            "use data curation, more width, or targeted steering rather than more scale"],
    "transition": ["near-zero coupling: the model sits at a phase boundary where small recipe changes have "
                   "large effects", "evaluate several checkpoints before drawing conclusions"],
    "bonus": ["positive coupling: improvements reinforce each other",
              "watch for saturation of either benchmark and rotate to a new axis when it stops separating models"],
}


@dataclass
class DiagnoseModel:
    b1: str
    b2: str
    min_delta: float          # percentage points
    tax_below: float
    bonus_above: float
    beta1: float              # population line B2 = beta1 * B1 + beta0 (percent)
    beta0: float
    k: float                  # isocline constant (fractions)
    rule: str
    calibration: str
    d_ref: float
    panel_model: list[str]
    panel_family: list[str]
    panel_log10_n: list[float]
    panel_b1: list[float]
    panel_b2: list[float]
    provenance: Provenance

    @classmethod
    def from_tree(cls, tree: dict[str, Any]) -> "DiagnoseModel":
        """Rebuild from ``to_tree`` / ``read_tree`` output (e.g. read back from HDF5)."""
        kw = {}
        for f in fields(cls):
            v = tree[f.name]
            if f.name == "provenance":
                v = v if isinstance(v, Provenance) else Provenance(**{k: v.get(k) for k in (
                    "method", "options", "seed", "n_resamples", "inputs", "version") if k in v})
            elif f.name.startswith("panel_"):
                v = [x.decode() if isinstance(x, bytes) else x for x in list(np.asarray(v).tolist())]
            kw[f.name] = v
        return cls(**kw)


@dataclass
class Diagnosis:
    name: str
    family: str
    params: float
    log10_n: float
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
    isocline_b2: float        # B2 on the isocline at this B1 (percent)
    predicted_sign: int       # by the isocline rule (0 unknown)
    h: float                  # B2 - (beta1 B1 + beta0), percent
    width_factor: float       # d_model / d_ref (NaN unknown)
    levers: list[str]
    notes: list[str] = field(default_factory=list)
    provenance: Provenance = None


def fit_diagnose_model(df: pd.DataFrame, b1: str = "HS", b2: str = "TQA", *, min_delta: float | None = None,
                       tax_below: float = -0.1, bonus_above: float = 0.1, calibration="OLMo",
                       rule: str = "above-positive", d_ref: float = D_REF) -> DiagnoseModel:
    """Coefficients and reference panel for ``diagnose_point`` (percent scores)."""
    check_pair(df, b1, b2)
    if rule not in RULES:
        raise OptionError(f"option 'rule': {rule!r} is not one of {', '.join(RULES)}")
    md = DEFAULT_MIN_DELTA_POINTS if min_delta is None else check_finite("min_delta", min_delta, nonneg=True)
    tax_below, bonus_above = check_thresholds(tax_below, bonus_above)
    d_ref = check_finite("d_ref", d_ref, positive=True)
    hf = h_field(df, b1, b2, group_by="family")
    k, _, _, desc = calibrate_k(df, b1, b2, calibration)
    panel, _ = complete_rows(df, (b1, b2))
    opts = {"b1": b1, "b2": b2, "min_delta": md, "tax_below": tax_below, "bonus_above": bonus_above,
            "calibration": desc, "rule": rule, "d_ref": d_ref, "units": "percent"}
    return DiagnoseModel(b1, b2, md, tax_below, bonus_above, hf.beta1, hf.beta0, k, rule, desc, d_ref,
                         panel["model"].astype(str).tolist(), panel["family"].astype(str).tolist(),
                         np.log10(panel["params"].to_numpy(float)).tolist(), panel[b1].astype(float).tolist(),
                         panel[b2].astype(float).tolist(), provenance("diagnose_model", opts, {"scores": df}))


def _gamma(lo_b1, lo_b2, hi_b1, hi_b2, lo_x, hi_x, min_delta) -> tuple[float, str]:
    if lo_x == hi_x:
        return math.nan, "equal N"
    d1 = hi_b1 - lo_b1
    if abs(d1) < min_delta:
        return math.nan, f"|dB1| = {abs(d1):.4g} < min_delta {min_delta:g}"
    return (hi_b2 - lo_b2) / d1, ""


def diagnose_point(model: DiagnoseModel, params: float, *, family: str | None = None,
                   scores: dict[str, float] | None = None, d_model: float | None = None,
                   name: str = "") -> Diagnosis:
    """Diagnosis of one model (pure: uses only ``model`` and the arguments)."""
    params = check_finite("params", params, positive=True)
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
        fam = [j for j, f in enumerate(model.panel_family) if f == family and names[j] != name]
        fam.sort(key=lambda j: (model.panel_log10_n[j], names[j]))
        below = [j for j in fam if model.panel_log10_n[j] <= x]
        above = [j for j in fam if model.panel_log10_n[j] > x]
        if below:
            j = below[-1]
            prev_m = names[j]
            g_prev, r = _gamma(model.panel_b1[j], model.panel_b2[j], v1, v2, model.panel_log10_n[j], x,
                               model.min_delta)
            g_reason = f"own interval: {r}" if r else ""
        else:
            g_reason = "smallest model of its family: no own interval"
        if above:
            j = above[0]
            next_m = names[j]
            g_next, r = _gamma(v1, v2, model.panel_b1[j], model.panel_b2[j], x, model.panel_log10_n[j],
                               model.min_delta)
            if r:
                g_reason = "; ".join(filter(None, [g_reason, f"next interval: {r}"]))
    elif family and family not in set(model.panel_family):
        notes.append(f"family {family!r} is not in the reference panel: no local gamma")
    elif not family:
        notes.append("no family given: no local gamma")
    if not have:
        notes.append(f"{model.b1} and {model.b2} are needed for gamma, isocline side and h")
    side, ps, iso_b2, h = "", 0, math.nan, math.nan
    if have:
        side, ps = predicted_sign(v1 / 100.0, v2 / 100.0, model.k, model.rule)
        iso_b2 = 100.0 * math.sqrt(model.k * v1 / 100.0)
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
    opts = {"name": name, "params": params, "family": family or "", "scores": scores,
            "d_model": d_model}
    return Diagnosis(name, family or "", params, x, v1, v2, prev_m, g_prev, next_m, g_next, g_reason, phase or "",
                     source, side, iso_b2, ps, h, wf, levers, notes,
                     Provenance("diagnose", {**opts, "model": model.provenance.options},
                                inputs=dict(model.provenance.inputs)))


def diagnose(df: pd.DataFrame, params: float, *, family: str | None = None, scores: dict[str, float] | None = None,
             d_model: float | None = None, name: str = "", b1: str = "HS", b2: str = "TQA", **model_options) -> Diagnosis:
    """Fit the DiagnoseModel on ``df`` and diagnose one model."""
    return diagnose_point(fit_diagnose_model(df, b1, b2, **model_options), params, family=family, scores=scores,
                          d_model=d_model, name=name)


build_diagnose_model = fit_diagnose_model  # alias
