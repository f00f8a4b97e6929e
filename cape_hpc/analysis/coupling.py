"""Local coupling gamma between consecutive sizes of one family (SPEC 2.1).

Within a family, models sorted by N (ties by name): for each model i after the first,
gamma_i = (B2_i - B2_{i-1}) / (B1_i - B1_{i-1}), attached to the larger model i, with the midpoint
x_i = (log10 N_{i-1} + log10 N_i) / 2.  Never across families.

Undefined (NaN, with ``reason``):
- ``equal N``: the two models have the same parameter count;
- ``|dB1| < min_delta``: the B1 step is below ``min_delta`` (default 0.5 points in percent,
  0.005 in fractions -- the threshold is in the units chosen by ``units``).

Choices where SPEC is silent: a model with a blank score in B1 or B2 is left out of that pair's
sequence (listed in ``dropped``), so its neighbours become consecutive; gamma itself does not
depend on units (it is a ratio), only the ``min_delta`` test does.  ``x_mid`` and the mean scores
``b1_mid``/``b2_mid`` of the two models are kept beside gamma (the isocline uses them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cape_hpc.analysis._common import (check_finite, check_pair, check_units, complete_rows,
                                       family_order, provenance, require_table_columns,
                                       select_families, sort_by_n)
from cape_hpc.analysis.phases import (DEFAULT_BONUS_ABOVE, DEFAULT_TAX_BELOW, check_thresholds,
                                      classify_phase)
from cape_hpc.schema import Provenance

DEFAULT_MIN_DELTA_POINTS = 0.5


@dataclass
class Interval:
    family: str
    model: str            # the larger model; gamma is attached to it
    prev_model: str
    n: float              # parameters of `model`
    prev_n: float
    x_mid: float          # (log10 N_prev + log10 N) / 2
    d_b1: float
    d_b2: float
    gamma: float          # NaN when undefined
    phase: str            # 'tax' | 'transition' | 'bonus' | '' (undefined)
    reason: str           # '' when defined
    b1_mid: float         # mean B1 of the two models (in the result's units)
    b2_mid: float


@dataclass
class CouplingResult:
    b1: str
    b2: str
    units: str
    min_delta: float
    tax_below: float
    bonus_above: float
    intervals: list[Interval]
    sequences: dict[str, list[str]]   # family -> model names sorted by N (models used)
    params: dict[str, float]          # model -> N
    dropped: list[str]                # models left out for a blank score
    provenance: Provenance

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([iv.__dict__ for iv in self.intervals])

    def by_family(self) -> dict[str, list[Interval]]:
        out: dict[str, list[Interval]] = {f: [] for f in self.sequences}
        for iv in self.intervals:
            out[iv.family].append(iv)
        return out


def default_min_delta(units: str) -> float:
    return DEFAULT_MIN_DELTA_POINTS * check_units(units)


def family_intervals(family: str, names, n, b1, b2, min_delta: float, tax_below: float,
                     bonus_above: float) -> list[Interval]:
    """Intervals of one family whose arrays are already sorted by N."""
    out = []
    for i in range(1, len(names)):
        d1 = float(b1[i] - b1[i - 1])
        d2 = float(b2[i] - b2[i - 1])
        x_mid = 0.5 * (math.log10(n[i - 1]) + math.log10(n[i]))
        if n[i] == n[i - 1]:
            gamma, reason = math.nan, "equal N"
        elif abs(d1) < min_delta:
            gamma, reason = math.nan, f"|dB1| = {abs(d1):.4g} < min_delta {min_delta:g}"
        else:
            gamma, reason = d2 / d1, ""
        phase = classify_phase(gamma, tax_below, bonus_above) or ""
        out.append(Interval(family, str(names[i]), str(names[i - 1]), float(n[i]), float(n[i - 1]),
                            x_mid, d1, d2, gamma, phase, reason,
                            0.5 * float(b1[i] + b1[i - 1]), 0.5 * float(b2[i] + b2[i - 1])))
    return out


def local_coupling(df: pd.DataFrame, b1: str = "HS", b2: str = "TQA", min_delta: float | None = None,
                   *, units: str = "percent", tax_below: float = DEFAULT_TAX_BELOW,
                   bonus_above: float = DEFAULT_BONUS_ABOVE, families=None) -> CouplingResult:
    """Per-family local coupling for the score pair (b1, b2); see the module doc."""
    require_table_columns(df, ("model", "family", "params"), "scores")
    check_pair(df, b1, b2)
    scale = check_units(units)
    min_delta = default_min_delta(units) if min_delta is None else check_finite("min_delta", min_delta, nonneg=True)
    tax_below, bonus_above = check_thresholds(tax_below, bonus_above)
    sub = select_families(df, families)
    sub, dropped = complete_rows(sub, (b1, b2))
    intervals: list[Interval] = []
    sequences: dict[str, list[str]] = {}
    for fam in family_order(sub):
        g = sort_by_n(sub.loc[sub["family"] == fam])
        names = g["model"].astype(str).to_numpy()
        sequences[str(fam)] = list(names)
        intervals += family_intervals(str(fam), names, g["params"].to_numpy(float),
                                      g[b1].to_numpy(float) * scale, g[b2].to_numpy(float) * scale,
                                      min_delta, tax_below, bonus_above)
    params = dict(zip(sub["model"].astype(str), sub["params"].astype(float)))
    opts = {"b1": b1, "b2": b2, "min_delta": min_delta, "units": units, "tax_below": tax_below,
            "bonus_above": bonus_above, "families": None if families is None else list(np.atleast_1d(families))}
    return CouplingResult(b1, b2, units, min_delta, tax_below, bonus_above, intervals, sequences, params,
                          dropped, provenance("local_coupling", opts, {"scores": df}))
