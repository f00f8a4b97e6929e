"""Local coupling gamma between consecutive sizes of one family (docs/METHODS.md §2.1).

Within a family, models sorted by N (ties by name; N is the training step under ``--scale step``,
``cape_hpc.analysis.scale``): for each model i after the first,
gamma_i = (B2_i - B2_{i-1}) / (B1_i - B1_{i-1}), attached to the larger model i, with the midpoint
x_i = (log10 N_{i-1} + log10 N_i) / 2.  Never across families.  The rule itself is
``cape_kernels.gamma_rule``, the one the N_c estimators apply to every resample.

Undefined (NaN, with ``reason``):
- ``equal N``: the two models have the same parameter count;
- ``|dB1| < min_delta``: the B1 step is below ``min_delta`` (in the chosen ``units``; default 0.5
  percentage points, i.e. 0.005 in fractions: ``CouplingOptions.min_delta_resolved``).

Choices where the definition is silent: a model with a blank score in B1 or B2 is left out of that
pair's sequence (listed in ``dropped``), so its neighbours become consecutive; gamma itself does not
depend on units (it is a ratio), only the ``min_delta`` test does.  ``x_mid`` and the mean scores
``b1_mid``/``b2_mid`` of the two models are kept beside gamma (the isocline uses them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cape_kernels import gamma_rule
from cape_kernels.resample import GAMMA_EQUAL_N, GAMMA_SMALL_STEP

from cape_hpc.analysis._common import (check_pair, complete_rows, family_groups, provenance, require_table_columns,
                                       select_families, sort_by_n)
from cape_hpc.analysis.options import CouplingOptions
from cape_hpc.analysis.phases import classify_phase
from cape_hpc.analysis.scale import SCALE, on_scale
from cape_hpc.schema import Provenance, Result


@dataclass
class Interval:
    family: str
    model: str            # the larger model; gamma is attached to it
    prev_model: str
    n: float              # parameters of `model` (its training step under --scale step)
    prev_n: float
    x_mid: float          # (log10 N_prev + log10 N) / 2
    d_b1: float
    d_b2: float
    gamma: float          # NaN when undefined
    phase: str            # 'tax' | 'transition' | 'bonus' | '' (undefined)
    reason: str           # '' when defined
    b1_mid: float         # mean B1 of the two models (in the result's units)
    b2_mid: float

    @property
    def d_b2_per_decade(self) -> float:
        """dB2 / dlog10 N of the interval (NaN for equal N)."""
        dx = math.log10(self.n) - math.log10(self.prev_n)
        return self.d_b2 / dx if dx != 0 else math.nan


@dataclass
class CouplingResult(Result):
    b1: str
    b2: str
    units: str
    min_delta: float
    tax_below: float
    bonus_above: float
    intervals: list[Interval]
    sequences: dict[str, list[str]]   # family -> model names sorted by N (models used)
    params: dict[str, float]          # model -> N (the training step under --scale step)
    dropped: list[str]                # models left out for a blank score
    provenance: Provenance

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([iv.__dict__ for iv in self.intervals])

    def by_family(self) -> dict[str, list[Interval]]:
        out: dict[str, list[Interval]] = {f: [] for f in self.sequences}
        for iv in self.intervals:
            out[iv.family].append(iv)
        return out


def interval_rows(x, values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The intervals between consecutive points of a sequence sorted by x (x = log10 N: per decade).

    x: [m] or [m, c] (c sequences, each its own x); values: [m] or [m, ...] along x (with x [m, c]:
    [m, c, ...]).  Returns (x_mid [m-1, ...x's other axes], mid [m-1, ...], slope [m-1, ...]):
    x_mid_i = (x_i + x_{i+1}) / 2, mid_i = (v_i + v_{i+1}) / 2 and slope_i = (v_{i+1} - v_i) /
    (x_{i+1} - x_i), the change per unit x; NaN where x repeats (equal N).  The one place the
    interval rows are made: local gamma's midpoints (``family_intervals``), the fixed point's
    derivative (``fixedpoint``, also for a batch of bootstrap ladders), the dynamics'
    forward-difference rows and the cross-model ladders.
    """
    x = np.asarray(x, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    dx = np.diff(x, axis=0)
    step = (dx != 0).reshape(dx.shape + (1,) * (v.ndim - x.ndim))
    slope = np.where(step, np.diff(v, axis=0) / np.where(step, dx.reshape(step.shape), 1.0), np.nan)
    return 0.5 * (x[1:] + x[:-1]), 0.5 * (v[1:] + v[:-1]), slope


def gamma_reason(code: int, d_b1: float, min_delta: float) -> str:
    """Why ``cape_kernels.gamma_rule`` left an interval undefined ('' when defined)."""
    if code == GAMMA_EQUAL_N:
        return "equal N"
    if code == GAMMA_SMALL_STEP:
        return f"|dB1| = {abs(d_b1):.4g} < min_delta {min_delta:g}"
    return ""


def family_intervals(family: str, names, n, b1, b2, min_delta: float, tax_below: float,
                     bonus_above: float) -> list[Interval]:
    """Intervals of one family whose arrays are already sorted by N (gammas by ``gamma_rule``)."""
    n = np.asarray(n, dtype=np.float64)
    b = np.column_stack([np.asarray(b1, dtype=np.float64), np.asarray(b2, dtype=np.float64)]).reshape(len(n), 2)
    gammas, codes = gamma_rule(np.zeros(len(n), dtype=np.int64), n, b[:, 0], b[:, 1], min_delta)
    x_mid, mid, _ = interval_rows(np.log10(n), b)
    d = np.diff(b, axis=0)
    out = []
    for i in range(1, len(names)):
        d1, d2 = float(d[i - 1, 0]), float(d[i - 1, 1])
        reason = gamma_reason(codes[i - 1], d1, min_delta)
        gamma = float(gammas[i - 1])
        phase = classify_phase(gamma, tax_below, bonus_above) or ""
        out.append(Interval(family, str(names[i]), str(names[i - 1]), float(n[i]), float(n[i - 1]),
                            float(x_mid[i - 1]), d1, d2, gamma, phase, reason,
                            float(mid[i - 1, 0]), float(mid[i - 1, 1])))
    return out


def local_coupling(df: pd.DataFrame, opts: CouplingOptions | None = None) -> CouplingResult:
    """Per-family local coupling for the score pair ``opts.pair``; see the module doc."""
    opts = CouplingOptions() if opts is None else opts
    b1, b2 = opts.b1, opts.b2
    require_table_columns(df, ("model", "family", "params"), "scores")
    check_pair(df, b1, b2)
    scale = opts.scale
    min_delta = opts.min_delta_resolved
    sub = on_scale(select_families(df, opts.families), opts)   # N, or the step under --scale step
    sub, dropped = complete_rows(sub, (b1, b2))
    intervals: list[Interval] = []
    sequences: dict[str, list[str]] = {}
    for fam, g in family_groups(sub):  # one pass over the table (docs/METHODS.md §1: per-family work is O(rows))
        g = sort_by_n(g, SCALE)
        names = g["model"].astype(str).to_numpy()
        sequences[str(fam)] = list(names)
        intervals += family_intervals(str(fam), names, g[SCALE].to_numpy(float),
                                      g[b1].to_numpy(float) * scale, g[b2].to_numpy(float) * scale,
                                      min_delta, opts.tax_below, opts.bonus_above)
    params = dict(zip(sub["model"].astype(str), sub[SCALE].astype(float)))
    return CouplingResult(b1, b2, opts.units, min_delta, opts.tax_below, opts.bonus_above, intervals, sequences,
                          params, dropped, provenance("local_coupling", opts, {"scores": df}))
