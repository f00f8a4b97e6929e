"""The steering direction (docs/METHODS.md §4.1), computed in one place (float64 numpy) for the
qualitative view (``steering.steer``) and the held-out evaluation (``steering.evaluate``)."""
from __future__ import annotations

import numpy as np

from cape_hpc.errors import DataError, OptionError
from cape_hpc.steering.results import METHODS

__all__ = ["unit_direction"]


def unit_direction(true_states: np.ndarray, false_states: np.ndarray, method: str = "mean-diff", *,
                   paired_differences: np.ndarray | None = None, where: str = "calibration") -> np.ndarray:
    """Unit direction [D] (float64) from pooled states of true [n_true, D] and false [n_false, D]
    statements: mean(true) - mean(false) (``mean-diff``), or the first principal component of the
    paired differences [P, D] (centred; ``pca``), oriented along the mean difference.  The pairs
    default to true_states[k] - false_states[k], k < min(n_true, n_false).

    Raises DataError (naming ``where``) when a side is empty or the direction has no length."""
    if method not in METHODS:
        raise OptionError(f"--direction: {method!r} is not one of {', '.join(METHODS)}")
    Xt, Xf = np.asarray(true_states, dtype=np.float64), np.asarray(false_states, dtype=np.float64)
    if not len(Xt) or not len(Xf):
        raise DataError(f"{where}: needs true and false statements")
    diff = Xt.mean(0) - Xf.mean(0)
    v = diff
    if method == "pca":
        if paired_differences is None:
            n = min(len(Xt), len(Xf))
            paired_differences = Xt[:n] - Xf[:n]
        P = np.asarray(paired_differences, dtype=np.float64)
        P = P - P.mean(0, keepdims=True)
        _, _, Vh = np.linalg.svd(P, full_matrices=False)
        v = Vh[0] if Vh[0] @ diff >= 0 else -Vh[0]
    nrm = np.linalg.norm(v)
    if not nrm > 0:
        raise DataError(f"{where}: true and false statements give the same mean state (no direction)")
    return v / nrm
