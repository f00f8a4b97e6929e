"""Phase of a coupling interval (SPEC 2.2) and of a model.

tax if gamma < tax_below (default -0.1), bonus if gamma > bonus_above (default +0.1), transition
otherwise (both bounds inclusive to transition).  An undefined gamma (NaN) has no phase (None).
A model's phase is the phase of the interval attached to it (the interval to its next smaller
family neighbour); the smallest model of a family has no phase.

Choice where SPEC is silent: thresholds are in units of gamma, a ratio of score changes, so they
do not depend on percent vs fraction; ``tax_below`` must not exceed ``bonus_above``.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import pandas as pd

from cape_hpc.analysis._common import PHASES, check_finite
from cape_hpc.errors import OptionError
from cape_hpc.schema import Provenance

DEFAULT_TAX_BELOW = -0.1
DEFAULT_BONUS_ABOVE = 0.1


def check_thresholds(tax_below: float, bonus_above: float) -> tuple[float, float]:
    lo = check_finite("tax_below", tax_below)
    hi = check_finite("bonus_above", bonus_above)
    if lo > hi:
        raise OptionError(f"option 'tax_below': {lo:g} is above 'bonus_above' {hi:g}")
    return lo, hi


def classify_phase(gamma: float, tax_below: float = DEFAULT_TAX_BELOW,
                   bonus_above: float = DEFAULT_BONUS_ABOVE) -> str | None:
    """'tax', 'transition', 'bonus', or None when gamma is undefined."""
    if gamma is None or math.isnan(gamma):
        return None
    if gamma < tax_below:
        return "tax"
    if gamma > bonus_above:
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
class PhaseResult:
    b1: str
    b2: str
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


def phases(df: pd.DataFrame, b1: str = "HS", b2: str = "TQA", *, min_delta: float | None = None,
           units: str = "percent", tax_below: float = DEFAULT_TAX_BELOW,
           bonus_above: float = DEFAULT_BONUS_ABOVE, families=None) -> PhaseResult:
    """Phase of every model (via ``local_coupling``), with counts per phase."""
    from cape_hpc.analysis.coupling import local_coupling  # coupling imports classify_phase from here

    cr = local_coupling(df, b1, b2, min_delta=min_delta, units=units, tax_below=tax_below,
                        bonus_above=bonus_above, families=families)
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
    opts = dict(cr.provenance.options)
    return PhaseResult(b1, b2, cr.tax_below, cr.bonus_above, rows,
                       {p: counts.get(p, 0) for p in (*PHASES, "undefined")}, fams,
                       provenance=Provenance("phases", opts, inputs=cr.provenance.inputs))
