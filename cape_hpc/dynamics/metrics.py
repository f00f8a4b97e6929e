"""Prediction errors of simulated (or baseline) score trajectories.

- ``rel_mae``: mean|pred - actual| / mean(actual) over every (model, benchmark) cell -- the paper's
  "mean error" / "MAE" in percent when multiplied by 100;
- ``mape``: mean(|pred - actual| / |actual|);
- ``mae_points``: mean|pred - actual| in score points;
- ``per_benchmark``: rel_mae of each benchmark column alone.
``pooled`` (column indices, default all) restricts the three pooled errors to some columns: with an
internal coupling in the state (docs/METHODS.md §2.13) they are over the benchmark columns only,
while ``per_benchmark`` lists every column.
A prediction that is NaN (failed integration, invalid baseline) makes every error NaN: a failure is
never averaged away.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class ErrorSummary:
    rel_mae: float
    mape: float
    mae_points: float
    per_benchmark: dict[str, float]
    n_points: int
    failed: bool = False


def trajectory_errors(pred: np.ndarray, actual: np.ndarray, benchmarks: Sequence[str],
                      pooled: Sequence[int] | None = None) -> ErrorSummary:
    pred = np.atleast_2d(np.asarray(pred, float))
    actual = np.atleast_2d(np.asarray(actual, float))
    if pred.shape != actual.shape:
        raise ValueError(f"prediction shape {pred.shape} != actual shape {actual.shape}")
    if pred.size == 0:
        nan = math.nan
        return ErrorSummary(nan, nan, nan, {b: nan for b in benchmarks}, 0, False)
    if not np.all(np.isfinite(pred)):
        nan = math.nan
        return ErrorSummary(nan, nan, nan, {b: nan for b in benchmarks}, int(pred.shape[0]), True)
    err = np.abs(pred - actual)
    with np.errstate(divide="ignore", invalid="ignore"):
        per = {b: float(err[:, j].mean() / actual[:, j].mean()) for j, b in enumerate(benchmarks)}
    cols = list(range(err.shape[1])) if pooled is None else list(pooled)
    e, a = err[:, cols], actual[:, cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        mape = float(np.mean(e / np.abs(a)))
    return ErrorSummary(float(e.mean() / a.mean()), mape, float(e.mean()), per,
                        int(pred.shape[0]), False)
