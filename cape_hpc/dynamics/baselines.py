"""Polynomial baselines: per benchmark, ``numpy.polyfit(log10 N, score, degree)`` over the training
models (all training families pooled), evaluated at the held-out models' log10 N.

Valid only with more distinct training sizes than the degree; otherwise every prediction is NaN
(``valid_`` False) rather than an ill-conditioned fit.

``anchored=True`` (an option; default off): the polynomial's shape is kept but shifted per family so
that it passes through the family's starting (smallest) model, as the ODE simulation does.
"""
from __future__ import annotations

import warnings

import numpy as np

from cape_hpc.dynamics.internals import score_columns
from cape_hpc.dynamics.metrics import ErrorSummary, trajectory_errors
from cape_hpc.dynamics.trajectories import Trajectory
from cape_hpc.errors import OptionError


class PolyBaseline:
    """Attributes after fit: ``coef_`` [p, degree + 1] (highest power first, as numpy.polyfit),
    ``benchmarks_``, ``n_points_``, ``valid_``."""

    def __init__(self, degree: int = 2, anchored: bool = False):
        self.degree = degree
        self.anchored = anchored

    def fit(self, trajectories):
        if not isinstance(self.degree, (int, np.integer)) or self.degree < 0:
            raise OptionError(f"option '--baseline-degrees': must be an integer >= 0, got {self.degree!r}")
        trajs = [trajectories] if isinstance(trajectories, Trajectory) else list(trajectories)
        x = np.concatenate([t.x for t in trajs])
        Y = np.concatenate([t.Y for t in trajs])
        self.benchmarks_ = trajs[0].benchmarks
        self.n_points_ = int(len(x))
        self.valid_ = len(np.unique(x)) > self.degree
        p = Y.shape[1]
        if not self.valid_:
            self.coef_ = np.full((p, self.degree + 1), np.nan)
            return self
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.coef_ = np.vstack([np.polyfit(x, Y[:, j], self.degree) for j in range(p)])
        return self

    def predict_x(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, float)
        return np.column_stack([np.polyval(c, x) for c in self.coef_])

    def predict(self, trajectory: Trajectory) -> np.ndarray:
        pred = self.predict_x(trajectory.x)
        if self.anchored:
            pred = pred - pred[0] + trajectory.Y[0]
        return pred

    def errors(self, trajectories, skip_first: bool = True) -> ErrorSummary:
        trajs = [trajectories] if isinstance(trajectories, Trajectory) else list(trajectories)
        k = 1 if skip_first else 0
        pred = np.concatenate([self.predict(t)[k:] for t in trajs])
        act = np.concatenate([t.Y[k:] for t in trajs])
        return trajectory_errors(pred, act, self.benchmarks_, score_columns(self.benchmarks_))

    def score(self, trajectories) -> float:
        return self.errors(trajectories).rel_mae
