"""Frontier regression (docs/METHODS.md §2.12): GPQA = slope * SWE + intercept over the frontier panel.

Reported: slope, intercept, Pearson r and its two-sided p (scipy.stats.pearsonr), per-lab slopes for
labs with >= ``min_lab_size`` (default 3) models, leave-one-lab-out (for each such lab: refit on all
other panel models, MAE on the lab's models in score points), the mean MAE and its std with ddof 0
and ddof 1, and h (residual) per model.

Choices where the paper is silent: the panel is the ``main`` cohort by default (``cohort='all'`` uses
every row); h is computed for every row of the table (post-cutoff models too) against the panel fit,
with ``in_fit`` saying which rows the line was fitted on; ``units`` scales the scores (MAE and h are
in those units).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from cape_hpc.analysis._common import check_pair, ols_line, provenance, require_table_columns
from cape_hpc.analysis.hfield import ModelH, h_field
from cape_hpc.analysis.options import FrontierOptions, HFieldOptions
from cape_hpc.errors import DataError
from cape_hpc.schema import Provenance, Result


@dataclass
class LabFit:
    lab: str
    n: int
    slope: float          # the lab's own slope (NaN when its SWE is constant)
    intercept: float
    holdout_mae: float    # MAE on the lab when the line is refitted without it
    mean_h: float


@dataclass
class FrontierResult(Result):
    b1: str
    b2: str
    cohort: str
    units: str
    n: int
    slope: float
    intercept: float
    r: float
    p: float
    labs: list[LabFit]           # labs with >= min_lab_size models
    lolo_mae_mean: float
    lolo_mae_std_ddof0: float
    lolo_mae_std_ddof1: float
    n_lolo_labs: int
    min_lab_size: int
    h: list[ModelH]
    provenance: Provenance


def frontier_fit(fr: pd.DataFrame, opts: FrontierOptions | None = None) -> FrontierResult:
    """Panel line, per-lab slopes and leave-one-lab-out, h per model (module doc)."""
    opts = opts or FrontierOptions()
    b1, b2, cohort, min_lab_size, units = opts.b1, opts.b2, opts.cohort, opts.min_lab_size, opts.units
    require_table_columns(fr, ("model", "lab"), "frontier")
    check_pair(fr, b1, b2)
    scale = opts.scale
    if cohort == "main":
        require_table_columns(fr, ("cohort",), "frontier")
        in_fit = (fr["cohort"] == "main").to_numpy()
    else:
        in_fit = np.ones(len(fr), bool)
    panel = fr.loc[in_fit].dropna(subset=[b1, b2])
    if len(panel) < 3:
        raise DataError(f"{fr.attrs.get('path', '<DataFrame>')}: frontier fit needs >= 3 models in cohort "
                        f"{cohort!r}, got {len(panel)}")
    x = panel[b1].to_numpy(float) * scale
    y = panel[b2].to_numpy(float) * scale
    lab = panel["lab"].astype(str).to_numpy()
    slope, icpt = ols_line(x, y)
    pr = stats.pearsonr(x, y)
    resid = y - (slope * x + icpt)
    labs = []
    for name in dict.fromkeys(lab):
        m = lab == name
        if m.sum() < min_lab_size:
            continue
        ls, li = ols_line(x[m], y[m])
        os_, oi = ols_line(x[~m], y[~m])
        mae = float(np.mean(np.abs(y[m] - (os_ * x[m] + oi))))
        labs.append(LabFit(str(name), int(m.sum()), ls, li, mae, float(resid[m].mean())))
    maes = np.array([lf.holdout_mae for lf in labs])
    nan = math.nan
    hres = h_field(fr, HFieldOptions(panel="frontier", pair=opts.pair, group_by="lab", units=units,
                                     fit_cohort=cohort))
    return FrontierResult(b1, b2, cohort, units, len(panel), slope, icpt, float(pr.statistic), float(pr.pvalue),
                          labs, float(maes.mean()) if len(maes) else nan,
                          float(maes.std(ddof=0)) if len(maes) else nan,
                          float(maes.std(ddof=1)) if len(maes) > 1 else nan, len(maes), min_lab_size, hres.models,
                          provenance("frontier_regression", opts, {"frontier": fr}))
