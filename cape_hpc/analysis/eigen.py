"""Eigen-geometry of the score space (docs/METHODS.md §2.11).

Within one family sorted by N, windows of models: ``cumulative`` (the first k models, k = min_window
.. n) or ``sliding`` (``width`` consecutive models).  Per window: PCA of the correlation (default) or
covariance of the score columns -> lambda1, lambda2, the e2 loadings, and the angle of e2.
Across windows: a power law lambda2 = c * N^p fitted by least squares of log10 lambda2 on log10 N
(N = the largest model of the window), with R^2 in log space.

Choices where the paper is silent:
- eigenvector signs are arbitrary; the first window's e2 is signed so that its largest-magnitude
  loading is positive, and every later e2 so that it has a non-negative dot product with the
  previous window's e2 (continuity), so loadings can be followed through a rotation;
- ``e2_angle_deg`` is the angle between a window's e2 and the first window's e2 (0..180 degrees),
  ``e2_step_deg`` the angle to the previous window's e2;
- a column that is constant in a window makes the correlation undefined: that window gets NaN;
- models with a blank score in any column are left out (``dropped``); ``units`` scales the scores
  (it matters for the covariance only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cape_hpc.analysis._common import (check_columns, complete_rows, ols_line, provenance, r_squared,
                                       select_families, sort_by_n)
from cape_hpc.analysis.options import EigenOptions
from cape_hpc.analysis.scale import SCALE, on_scale
from cape_hpc.errors import OptionError
from cape_hpc.schema import Provenance, Result


@dataclass
class EigenWindow:
    first_model: str
    last_model: str
    n_models: int
    log10_n: float            # log10 N of the largest model
    lambda1: float
    lambda2: float
    e2: list[float]           # loadings on `columns`
    e2_angle_deg: float
    e2_step_deg: float


@dataclass
class EigenResult(Result):
    family: str
    units: str                # of the scores (the covariance and its eigenvalues scale with units^2)
    columns: list[str]
    matrix: str
    mode: str
    width: int
    windows: list[EigenWindow]
    power_exponent: float     # p in lambda2 ~ N^p
    power_prefactor: float    # c
    power_r2: float
    n_power_points: int
    dropped: list[str]
    provenance: Provenance


def _angle(u: np.ndarray, v: np.ndarray) -> float:
    c = float(np.clip(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)), -1.0, 1.0))
    return math.degrees(math.acos(c))


def eigen_geometry(df: pd.DataFrame, opts: EigenOptions | None = None) -> EigenResult:
    """PCA windows along N in one family, and the power law of lambda2 (module doc)."""
    opts = opts or EigenOptions()
    family, columns, matrix, mode, width = opts.family, list(opts.columns), opts.matrix, opts.mode, opts.width
    check_columns(df, columns, "--columns")
    scale = opts.scale
    g = sort_by_n(on_scale(select_families(df, family, option="--family"), opts), SCALE)  # N, or the step
    g, dropped = complete_rows(g, columns)
    X = g[columns].to_numpy(float) * scale
    names = g["model"].astype(str).tolist()
    logn = np.log10(g[SCALE].to_numpy(float))
    n = len(g)
    if mode == "cumulative":
        spans = [(0, k) for k in range(opts.min_window, n + 1)]
    else:
        spans = [(i, i + width) for i in range(0, n - width + 1)]
    if not spans:
        raise OptionError(f"option '{'--min-window' if mode == 'cumulative' else '--width'}': family {family!r} has "
                          f"{n} complete model(s), too few for one window")
    windows: list[EigenWindow] = []
    first = prev = None
    for s, e in spans:
        W = X[s:e]
        with np.errstate(invalid="ignore", divide="ignore"):  # a constant column: NaN window (module doc)
            C = np.corrcoef(W, rowvar=False) if matrix == "correlation" else np.cov(W, rowvar=False)
        if not np.all(np.isfinite(C)):
            windows.append(EigenWindow(names[s], names[e - 1], e - s, float(logn[e - 1]), math.nan, math.nan,
                                       [math.nan] * len(columns), math.nan, math.nan))
            continue
        lam, vec = np.linalg.eigh(C)
        order = np.argsort(lam)[::-1]
        lam, vec = lam[order], vec[:, order]
        e2 = vec[:, 1].copy()
        if prev is None:
            if e2[np.argmax(np.abs(e2))] < 0:
                e2 = -e2
            first = e2
        elif np.dot(e2, prev) < 0:
            e2 = -e2
        step = _angle(e2, prev) if prev is not None else 0.0
        windows.append(EigenWindow(names[s], names[e - 1], e - s, float(logn[e - 1]), float(lam[0]), float(lam[1]),
                                   [float(v) for v in e2], _angle(e2, first), step))
        prev = e2
    pts = [(w.log10_n, math.log10(w.lambda2)) for w in windows if w.lambda2 > 0]
    p = c = r2 = math.nan
    if len(pts) >= 2:
        xx, yy = np.array(pts).T
        p, icpt = ols_line(xx, yy)
        if math.isfinite(p):
            c = 10.0 ** icpt if icpt < 308.0 else math.inf
            r2 = r_squared(yy, p * xx + icpt)
    return EigenResult(family, opts.units, columns, matrix, mode, width if mode == "sliding" else 0, windows, p, c, r2,
                       len(pts),
                       dropped, provenance("eigen_geometry", opts, {"scores": df}))
