"""Residual field h (docs/METHODS.md §2.7): B2 = beta1 * B1 + beta0 by least squares over a panel;
h_i is model i's residual, aggregated by a grouping column (family for base models, lab for the
frontier).

Works on any table with the two score columns and the grouping column.  Choices where the paper is
silent: ``units`` scales the scores (h, the line and the reported scores are in those units); the
aggregate reports count, mean and the sample std (ddof=1, NaN for one model); rows with a blank
score are left out (``dropped``); ``fit_cohort='main'`` fits the line on the table's main cohort
(the frontier's) and computes h for every row against it (``in_fit`` says which rows were fitted).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cape_hpc.analysis._common import check_pair, complete_rows, ols_line, provenance, require_table_columns, split_by
from cape_hpc.analysis.options import HFieldOptions
from cape_hpc.errors import OptionError
from cape_hpc.schema import Provenance, Result


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
class HFieldResult(Result):
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


def h_field(df: pd.DataFrame, opts: HFieldOptions | None = None) -> HFieldResult:
    """Population line, per-model residual h and its mean per group."""
    opts = opts or HFieldOptions()
    b1, b2, group_by = opts.b1, opts.b2, opts.resolved_group_by
    check_pair(df, b1, b2)
    if group_by not in df.columns:
        raise OptionError(f"option '--group-by': no column {group_by!r} in the table {df.attrs.get('path', '')}".rstrip())
    if opts.fit_cohort == "main":
        require_table_columns(df, ("cohort",), "--fit-cohort main: the")
        fit_rows = (df["cohort"] == "main").to_numpy()
    else:
        fit_rows = np.ones(len(df), bool)
    scale = opts.scale
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
    for g, v in split_by(d[group_by], h):  # one sort, not a mask per group
        groups.append(GroupH(str(g), len(v), float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan))
    return HFieldResult(b1, b2, group_by, opts.units, beta1, beta0, int(fit.sum()), models, groups, dropped,
                        provenance("h_field", opts, {"table": df}))
