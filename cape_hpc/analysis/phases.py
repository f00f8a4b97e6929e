"""Phase of a coupling interval and of a model (docs/METHODS.md §2.2).

tax if gamma < tax_below (default -0.1), bonus if gamma > bonus_above (default +0.1), transition
otherwise (both bounds inclusive to transition).  An undefined gamma (NaN) has no phase (None).
A model's phase is the phase of the interval attached to it (the interval to its next smaller
family neighbour); the smallest model of a family has no phase.

Choice where the paper is silent: thresholds are in units of gamma, a ratio of score changes, so
they do not depend on percent vs fraction; ``tax_below`` must not exceed ``bonus_above``.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import pandas as pd

from cape_hpc.analysis.options import PHASES, CouplingOptions, PhasesOptions, PhaseThresholds, narrow
from cape_hpc.schema import Provenance, Result


def classify_phase(gamma: float, tax_below: float | None = None, bonus_above: float | None = None) -> str | None:
    """'tax', 'transition', 'bonus', or None when gamma is undefined (thresholds: those of
    ``PhaseThresholds`` when not given)."""
    if gamma is None or math.isnan(gamma):
        return None
    lo = PhaseThresholds.default_of("tax_below") if tax_below is None else tax_below
    hi = PhaseThresholds.default_of("bonus_above") if bonus_above is None else bonus_above
    if gamma < lo:
        return "tax"
    if gamma > hi:
        return "bonus"
    return "transition"


@dataclass
class ModelPhase:
    family: str
    model: str
    params: float
    gamma: float
    phase: str          # '' when undefined
    reason: str         # why undefined ('' when defined)


@dataclass
class PhaseResult(Result):
    b1: str
    b2: str
    units: str
    min_delta: float                     # in `units`
    tax_below: float
    bonus_above: float
    models: list[ModelPhase]
    counts: dict[str, int]               # phase -> number of models ('undefined' too)
    families_per_phase: dict[str, int]   # phase -> number of distinct families
    provenance: Provenance

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([m.__dict__ for m in self.models])

    def phase_of(self) -> dict[str, str]:
        """model name -> phase ('' when undefined)."""
        return {m.model: m.phase for m in self.models}


def phases(df: pd.DataFrame, opts: PhasesOptions | None = None) -> PhaseResult:
    """Phase of every model (via ``local_coupling``), with counts per phase."""
    from cape_hpc.analysis.coupling import local_coupling  # coupling imports classify_phase from here

    opts = opts or PhasesOptions()
    cr = local_coupling(df, narrow(opts, CouplingOptions))
    attached = {iv.model: iv for iv in cr.intervals}
    rows: list[ModelPhase] = []
    for fam, seq in cr.sequences.items():
        for name in seq:
            iv = attached.get(name)
            if iv is None:
                rows.append(ModelPhase(fam, name, cr.params[name], math.nan, "", "smallest model of its family"))
            else:
                rows.append(ModelPhase(fam, name, cr.params[name], iv.gamma, iv.phase, iv.reason))
    counts = Counter(r.phase or "undefined" for r in rows)
    fams = {p: len({r.family for r in rows if r.phase == p}) for p in PHASES}
    return PhaseResult(opts.b1, opts.b2, opts.units, cr.min_delta, opts.tax_below, opts.bonus_above, rows,
                       {p: counts.get(p, 0) for p in (*PHASES, "undefined")}, fams,
                       provenance=Provenance("phases", opts.to_dict(), inputs=dict(cr.provenance.inputs)))

