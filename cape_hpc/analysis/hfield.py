"""Residual field h (SPEC 2.7): B2 = beta1 * B1 + beta0 by least squares over a panel; h_i is model
i's residual, aggregated by a grouping column (family for base models, lab for the frontier).

Works on any table with the two score columns and the grouping column.  Choices where SPEC is
silent: ``units`` scales the scores (h is in those units); the aggregate reports count, mean and
the sample std (ddof=1, NaN for one model); rows with a blank score are left out (``dropped``);
``fit_rows`` (a boolean mask, e.g. the frontier's main cohort) lets h be computed for every row
against a line fitted on a subset.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cape_hpc.analysis._common import check_pair, check_units, complete_rows, ols_line, provenance
from cape_hpc.errors import OptionError
from cape_hpc.schema import Provenance


@dataclass
class ModelH:
    model: str
    group: str
    b1: float
    b2: float
    predicted: float
    h: float
    in_fit: bool


@dataclass
class GroupH:
    group: str
    count: int
    mean_h: float
    std_h: float


@dataclass
class HFieldResult:
    b1: str
    b2: str
    group_by: str
    units: str
    beta1: float
    beta0: float
    n_fit: int
    models: list[ModelH]
    groups: list[GroupH]
    dropped: list[str]
    provenance: Provenance


def h_field(df: pd.DataFrame, b1: str = "HS", b2: str = "TQA", *, group_by: str = "family",
            units: str = "percent", fit_rows: np.ndarray | None = None) -> HFieldResult:
    """Population line, per-model residual h and its mean per group."""
    check_pair(df, b1, b2)
    if group_by not in df.columns:
        raise OptionError(f"option 'group_by': no column {group_by!r} in the table")
    scale = check_units(units)
    if fit_rows is None:
        fit_rows = np.ones(len(df), bool)
    fit_rows = np.asarray(fit_rows, bool)
    if fit_rows.shape != (len(df),):
        raise OptionError(f"option 'fit_rows': needs {len(df)} booleans, got shape {fit_rows.shape}")
    d = df.assign(_fit=fit_rows)
    d, dropped = complete_rows(d, (b1, b2))
    x = d[b1].to_numpy(float) * scale
    y = d[b2].to_numpy(float) * scale
    fit = d["_fit"].to_numpy(bool)
    beta1, beta0 = ols_line(x[fit], y[fit])
    pred = beta1 * x + beta0
    h = y - pred
    models = [ModelH(str(m), str(g), float(a), float(b), float(p), float(r), bool(f))
              for m, g, a, b, p, r, f in zip(d["model"], d[group_by], x, y, pred, h, fit)]
    groups = []
    for g in dict.fromkeys(d[group_by]):
        v = h[(d[group_by] == g).to_numpy()]
        groups.append(GroupH(str(g), len(v), float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan))
    opts = {"b1": b1, "b2": b2, "group_by": group_by, "units": units, "n_fit": int(fit.sum())}
    return HFieldResult(b1, b2, group_by, units, beta1, beta0, int(fit.sum()), models, groups, dropped,
                        provenance("h_field", opts, {"table": df}))
