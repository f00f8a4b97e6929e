"""Isocline (docs/METHODS.md §2.8): B2_c(B1) = sqrt(k * B1) with scores as fractions, k = B2*^2 / B1*.

Calibration (``--calibration``): a family name (default ``OLMo``: B1* and B2* are the means of its
models' B1 and B2 -- "the OLMo pair"), model names separated by commas (same means over them), or a
number (k itself).  For every defined coupling interval the midpoint (mean B1, mean B2) of its two
models is compared with the isocline: ``above`` when B2_mid > sqrt(k * B1_mid), else ``below``.

Side-to-sign rule (``rule``), the paper's text and its reported counts imply opposite ones:
- ``above-positive`` (default): above the isocline predicts gamma > 0, below predicts gamma < 0
  (the text: curated families "sit above the isocline", consistent with cooperative coupling);
- ``above-negative``: the reverse.
Agreement per family = intervals whose predicted sign equals sign(gamma), over the defined ones.

Units: ``min_delta`` is in ``--units`` like in every other analysis (default 0.5 percentage points);
the isocline itself is defined on fractions, so k, B1*, B2* and the interval midpoints are always
reported in fractions (the result says ``units`` for the threshold).  Choices where the paper is
silent: gamma == 0 exactly counts as a disagreement with either prediction; the calibration
family's own intervals are included in the counts (flagged ``calibration`` in each row) and
``exclude_calibration`` leaves them out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import pandas as pd

from cape_hpc.analysis._common import check_pair, provenance
from cape_hpc.analysis.coupling import local_coupling
from cape_hpc.analysis.options import CouplingOptions, IsoclineOptions, narrow
from cape_hpc.errors import OptionError
from cape_hpc.schema import Provenance, Result


@dataclass
class IsoclineInterval:
    family: str
    model: str
    prev_model: str
    b1_mid: float        # fraction
    b2_mid: float
    b2_isocline: float   # sqrt(k * b1_mid)
    side: str            # 'above' | 'below'
    predicted_sign: int
    gamma: float
    agrees: bool
    calibration: bool


@dataclass
class IsoclineFamily:
    family: str
    n_intervals: int
    n_agree: int
    fraction: float
    n_above: int


@dataclass
class IsoclineResult(Result):
    b1: str
    b2: str
    units: str           # of min_delta; k, B1*, B2* and the midpoints are fractions (the isocline's own)
    min_delta: float     # in `units`
    k: float
    b1_star: float
    b2_star: float
    calibration: str
    rule: str
    intervals: list[IsoclineInterval]
    families: list[IsoclineFamily]
    total_agree: int
    total_intervals: int
    provenance: Provenance


def calibrate_k(df: pd.DataFrame, b1: str, b2: str, calibration) -> tuple[float, float, float, str]:
    """(k, B1*, B2*, description) in fractions; ``calibration`` as ``IsoclineRule.calibration_value``."""
    if isinstance(calibration, Real) and not isinstance(calibration, bool):
        k = float(calibration)
        if not (math.isfinite(k) and k > 0):
            raise OptionError(f"option '--calibration': k must be a positive number, got {calibration!r}")
        return k, math.nan, math.nan, f"k={k:g}"
    if isinstance(calibration, str):
        rows = df.loc[df["family"] == calibration]
        if rows.empty:
            rows = df.loc[df["model"] == calibration]
        desc = calibration
    else:
        names = list(calibration)
        rows = df.loc[df["model"].isin(names)]
        missing = sorted(set(names) - set(rows["model"]))
        if missing:
            raise OptionError(f"option '--calibration': unknown model(s) {', '.join(map(repr, missing))}")
        desc = ",".join(names)
    if rows.empty:
        raise OptionError(f"option '--calibration': {calibration!r} is neither a family nor a model of the table")
    rows = rows.dropna(subset=[b1, b2])
    b1s, b2s = rows[b1].mean() / 100.0, rows[b2].mean() / 100.0
    if not b1s > 0:
        raise OptionError(f"option '--calibration': B1* = {b1s:g} must be > 0")
    return b2s ** 2 / b1s, float(b1s), float(b2s), desc


def predicted_sign(b1_mid: float, b2_mid: float, k: float, rule: str) -> tuple[str, int]:
    """('above'|'below', predicted sign of gamma) of a point (fractions)."""
    side = "above" if b2_mid > math.sqrt(k * b1_mid) else "below"
    s = 1 if side == "above" else -1
    return side, s if rule == "above-positive" else -s


def isocline(df: pd.DataFrame, opts: IsoclineOptions | None = None) -> IsoclineResult:
    """Isocline side of every interval midpoint, the sign it predicts, and agreement per family."""
    opts = opts or IsoclineOptions()
    b1, b2, rule = opts.b1, opts.b2, opts.rule
    check_pair(df, b1, b2)
    calibration = opts.calibration_value
    k, b1s, b2s, desc = calibrate_k(df, b1, b2, calibration)
    cal_family = calibration if isinstance(calibration, str) and calibration in set(df["family"]) else None
    cal_models = set(df.loc[df["model"].isin([calibration] if isinstance(calibration, str) else
                                             ([] if isinstance(calibration, Real) else list(calibration))), "model"])
    # the isocline lives in fractions: the coupling runs in fractions with min_delta converted
    md_fraction = opts.min_delta
    if md_fraction is not None and opts.units == "percent":
        md_fraction = md_fraction / 100.0
    cr = local_coupling(df, narrow(opts, CouplingOptions, units="fraction", min_delta=md_fraction))
    rows = []
    for iv in cr.intervals:
        if iv.reason:
            continue
        is_cal = iv.family == cal_family or iv.model in cal_models or iv.prev_model in cal_models
        if opts.exclude_calibration and is_cal:
            continue
        side, s = predicted_sign(iv.b1_mid, iv.b2_mid, k, rule)
        agrees = (s > 0 and iv.gamma > 0) or (s < 0 and iv.gamma < 0)
        rows.append(IsoclineInterval(iv.family, iv.model, iv.prev_model, iv.b1_mid, iv.b2_mid,
                                     math.sqrt(k * iv.b1_mid), side, s, iv.gamma, bool(agrees), bool(is_cal)))
    fams = []
    by_family: dict[str, list[IsoclineInterval]] = {}
    for r in rows:  # one pass (not a scan of every row per family)
        by_family.setdefault(r.family, []).append(r)
    for f, rs in by_family.items():
        na = sum(r.agrees for r in rs)
        fams.append(IsoclineFamily(f, len(rs), na, na / len(rs), sum(r.side == "above" for r in rs)))
    return IsoclineResult(b1, b2, opts.units, opts.min_delta_resolved, k, b1s, b2s, desc, rule, rows, fams, sum(r.agrees for r in rows),
                          len(rows), provenance("isocline", opts, {"scores": df}))
