"""Loss law (SPEC 2.9): L = E + A * N^-alpha by scipy.optimize.curve_fit.

Reported: E, A, alpha with standard errors (sqrt of the diagonal of curve_fit's covariance,
``absolute_sigma=False``), R^2 = 1 - SS_res / SS_tot, and the CV of N^alpha (L - E) across models
(std / mean; ddof 0 by default, ``cv_ddof`` option).

Choices where SPEC is silent: N is the parameter count divided by ``n_scale`` (default 1e9, N in
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

from cape_hpc.analysis._common import check_finite, check_positive_int, provenance, require_table_columns
from cape_hpc.errors import DataError
from cape_hpc.schema import Provenance


def loss_model(n, e, a, alpha):
    return e + a * np.power(n, -alpha)


@dataclass
class LossLawResult:
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
    provenance: Provenance


def loss_law(loss: pd.DataFrame, *, n_scale: float = 1e9, cv_ddof: int = 0, maxfev: int = 20000) -> LossLawResult:
    require_table_columns(loss, ("model", "params", "val_loss"), "loss")
    n_scale = check_finite("n_scale", n_scale, positive=True)
    if cv_ddof not in (0, 1):
        from cape_hpc.errors import OptionError

        raise OptionError(f"option 'cv_ddof': must be 0 or 1, got {cv_ddof!r}")
    maxfev = check_positive_int("maxfev", maxfev)
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
                               maxfev=maxfev)
    except RuntimeError as exc:
        raise DataError(f"{loss.attrs.get('path', '<DataFrame>')}: loss-law fit did not converge ({exc})") from None
    e, a, alpha = (float(v) for v in popt)
    se = np.sqrt(np.diag(pcov))
    fitted = loss_model(n, *popt)
    ss_res = float(((y - fitted) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    inv = n ** alpha * (y - e)
    cv = float(inv.std(ddof=cv_ddof) / inv.mean())
    opts = {"model": "L = E + A * (N / n_scale)^-alpha", "n_scale": n_scale, "cv_ddof": cv_ddof,
            "p0": [float(v) for v in p0], "bounds": "E in [0, min L], A >= 0, alpha in [0, 10]"}
    return LossLawResult(e, a, alpha, float(se[0]), float(se[1]), float(se[2]), a * n_scale ** alpha,
                         1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan, cv, cv_ddof,
                         [float(v) for v in inv], list(d["model"].astype(str)), [float(v) for v in d["params"]],
                         [float(v) for v in y], [float(v) for v in fitted], n_scale,
                         provenance("loss_law", opts, {"loss": loss}))
