"""Coupling fixed point (docs/METHODS.md §2.10): fit dgamma/dlogN = a * gamma + b over a gamma sequence.

gamma* = -b / a; it attracts when a < 0 and repels when a > 0.

The sequence is one family's defined gammas at their midpoints x (see ``coupling``), or any
(x, gamma) arrays (``fixed_point_xy``).  gamma is a ratio, so a and b do not depend on ``units``;
only the coupling's ``min_delta`` is in ``units``.  Choices where the paper is silent: the derivative is the finite
difference between consecutive defined gammas, (gamma_{j+1} - gamma_j) / (x_{j+1} - x_j); it is
regressed on the gamma at the same place, by default the mean of the two (``at='mid'``; ``'left'``
uses gamma_j, the forward-Euler form); the fit needs >= 2 derivative points (3 gammas); a = 0 gives
NaN.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cape_hpc.analysis._common import ols_rows, provenance, select_families
from cape_hpc.analysis.coupling import interval_rows, local_coupling
from cape_hpc.analysis.options import CouplingOptions, FixedPointOptions, narrow
from cape_hpc.schema import Provenance, Result


@dataclass
class FixedPointResult(Result):
    family: str
    units: str                # of min_delta
    min_delta: float
    a: float
    b: float
    gamma_star: float
    stability: str            # 'attracting' | 'repelling' | 'undefined'
    n_points: int             # derivative points used
    x: list[float]            # gamma positions (midpoints)
    gamma: list[float]
    dgamma: list[float]       # finite-difference derivatives
    gamma_at: list[float]     # gamma the derivative is regressed on
    at: str
    reason: str
    provenance: Provenance


def fit_rows(x: np.ndarray, g: np.ndarray, at: str):
    """The fit of every row of a batch of sequences (x, gamma [c, m], finite): each row sorted by x
    (stable), its interval rows (``interval_rows``: derivative ``dg`` and ``gat``, the gamma it is
    regressed on, [c, m-1]), ``keep`` [c, m-1] (x does not repeat) and the line dg = a gat + b over
    the kept intervals (``ols_rows`` on the rows with the same count, compacted: the same sums as one
    sequence at a time; NaN with < 2 kept).  Returns (x, g, dg, gat, keep, a [c], b [c])."""
    order = np.argsort(x, axis=1, kind="mergesort")
    x, g = np.take_along_axis(x, order, 1), np.take_along_axis(g, order, 1)
    _, g_mid, slope = (r.T for r in interval_rows(x.T, g.T))
    keep = np.diff(x, axis=1) != 0
    gat = g_mid if at == "mid" else g[:, :-1]
    a, b = np.full(len(x), np.nan), np.full(len(x), np.nan)
    n_kept = keep.sum(1)
    for k in np.unique(n_kept[n_kept >= 2]):
        rows = np.flatnonzero(n_kept == k)
        first = np.argsort(~keep[rows], axis=1, kind="stable")[:, :k]     # the kept intervals, in order
        a[rows], b[rows] = ols_rows(np.take_along_axis(gat[rows], first, 1),
                                    np.take_along_axis(slope[rows], first, 1))
    return x, g, slope, gat, keep, a, b


def fixed_points(x: np.ndarray, g: np.ndarray, at: str = "mid") -> np.ndarray:
    """gamma* = -b / a of every row of (x, gamma) [c, m] (finite values; a bootstrap's drawn ladders):
    ``fixed_point_xy``'s value row by row, NaN where it has a reason."""
    *_, a, b = fit_rows(np.asarray(x, float), np.asarray(g, float), at)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(a) & (a != 0), -b / a, np.nan)


def _fit(x: np.ndarray, g: np.ndarray, at: str):
    x, g, dg, gat, keep, a, b = fit_rows(x[None, :], g[None, :], at)
    k = keep[0]
    return x[0], g[0], dg[0][k], gat[0][k], float(a[0]), float(b[0])


def fixed_point_xy(x, gamma, opts: FixedPointOptions | None = None, *, min_delta: float = math.nan,
                   inputs=None) -> FixedPointResult:
    """Fixed point of any (x, gamma) sequence (``opts.at``; ``opts.family`` only labels the result;
    ``min_delta`` is the threshold the gammas were made with, in ``opts.units``, NaN if unknown)."""
    opts = opts or FixedPointOptions()
    x = np.asarray(x, float)
    gamma = np.asarray(gamma, float)
    ok = np.isfinite(x) & np.isfinite(gamma)
    x, g, dg, gat, a, b = _fit(x[ok], gamma[ok], opts.at)
    reason = ""
    if len(dg) < 2:
        reason = f"{len(dg)} derivative point(s) < 2 (needs >= 3 defined gammas)"
    elif not math.isfinite(a) or a == 0:
        reason = "a is zero or undefined (gamma constant)"
    star = -b / a if not reason else math.nan
    stab = "undefined" if reason else ("attracting" if a < 0 else "repelling")
    return FixedPointResult(opts.family, opts.units, float(min_delta), a, b, star, stab, len(dg),
                            list(map(float, x)), list(map(float, g)), list(map(float, dg)), list(map(float, gat)),
                            opts.at, reason, provenance("coupling_fixed_point", opts, inputs or {}))


def coupling_fixed_point(df: pd.DataFrame, opts: FixedPointOptions | None = None) -> FixedPointResult:
    """Fixed point of one family's gamma sequence (default OPT, as in the paper)."""
    opts = opts or FixedPointOptions()
    select_families(df, opts.family, option="--family")
    cr = local_coupling(df, narrow(opts, CouplingOptions, families=(opts.family,)))
    ivs = [iv for iv in cr.intervals if not iv.reason]
    return fixed_point_xy([iv.x_mid for iv in ivs], [iv.gamma for iv in ivs], opts, min_delta=cr.min_delta,
                          inputs={"scores": df})
