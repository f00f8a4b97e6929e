"""Loss law (docs/METHODS.md §2.9): L = E + A * N^-alpha by scipy.optimize.curve_fit.

Reported: E, A, alpha with standard errors (sqrt of the diagonal of curve_fit's covariance,
``absolute_sigma=False``), R^2 = 1 - SS_res / SS_tot, and the CV of N^alpha (L - E) across models
(std / mean; ddof 0 by default, ``cv_ddof`` option).  Losses are not percent: ``units`` does not
apply.

Choices where the paper is silent: N is the parameter count divided by ``n_scale`` (default 1e9, N in
billions) so that A is of order one and the fit is well conditioned; A is reported for that scale
(A_raw = A * n_scale^alpha is given too).  Starting point: E0 = 0.9 * min(L), alpha0 and A0 from a
straight line of log(L - E0) against log N.  Bounds: E in [0, min L), A > 0, alpha > 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import curve_fit

from cape_hpc.analysis._common import provenance, r_squared, require_table_columns
from cape_hpc.analysis.options import LossOptions
from cape_hpc.errors import DataError
from cape_hpc.schema import Provenance, Result

BOUNDS = "E in [0, min L], A >= 0, alpha in [0, 10]"


def loss_model(n, e, a, alpha):
    return e + a * np.power(n, -alpha)


@dataclass
class LossLawResult(Result):
    E: float
    A: float
    alpha: float
    E_se: float
    A_se: float
    alpha_se: float
    A_raw: float              # A for N in parameters: A * n_scale**alpha
    r2: float
    cv: float                 # CV of N^alpha (L - E)
    cv_ddof: int
    invariant: list[float]    # N^alpha (L - E) per model (N in n_scale units)
    models: list[str]
    params: list[float]
    val_loss: list[float]
    fitted: list[float]
    n_scale: float
    p0: list[float]           # the starting point of the fit (E0, A0, alpha0)
    bounds: str
    provenance: Provenance


def loss_law(loss: pd.DataFrame, opts: LossOptions | None = None) -> LossLawResult:
    """Fit L = E + A (N / n_scale)^-alpha to the loss table (module doc)."""
    opts = opts or LossOptions()
    n_scale, cv_ddof = opts.n_scale, opts.cv_ddof
    require_table_columns(loss, ("model", "params", "val_loss"), "loss")
    d = loss.sort_values("params")
    n = d["params"].to_numpy(float) / n_scale
    y = d["val_loss"].to_numpy(float)
    if len(d) < 4:
        raise DataError(f"{loss.attrs.get('path', '<DataFrame>')}: the loss law has 3 parameters and needs "
                        f">= 4 models, got {len(d)}")
    e0 = 0.9 * y.min()
    slope, icpt = np.polyfit(np.log(n), np.log(y - e0), 1)
    p0 = (e0, math.exp(icpt), max(-slope, 1e-3))
    try:
        popt, pcov = curve_fit(loss_model, n, y, p0=p0, bounds=([0.0, 0.0, 0.0], [y.min(), np.inf, 10.0]),
                               maxfev=opts.maxfev)
    except RuntimeError as exc:
        raise DataError(f"{loss.attrs.get('path', '<DataFrame>')}: loss-law fit did not converge ({exc})") from None
    e, a, alpha = (float(v) for v in popt)
    se = np.sqrt(np.diag(pcov))
    fitted = loss_model(n, *popt)
    inv = n ** alpha * (y - e)
    cv = float(inv.std(ddof=cv_ddof) / inv.mean())
    return LossLawResult(e, a, alpha, float(se[0]), float(se[1]), float(se[2]), a * n_scale ** alpha,
                         r_squared(y, fitted), cv, cv_ddof,
                         [float(v) for v in inv], list(d["model"].astype(str)), [float(v) for v in d["params"]],
                         [float(v) for v in y], [float(v) for v in fitted], n_scale,
                         [float(v) for v in p0], BOUNDS, provenance("loss_law", opts, {"loss": loss}))
