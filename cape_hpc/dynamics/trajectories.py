"""Family trajectories in benchmark space and their finite-difference derivatives dB/dlog10 N.

A *trajectory* is one family's models sorted by N: ``x = log10 N`` (non-uniform grid) and the
score matrix ``Y[n, p]`` in percent (as in the tables).  Estimators convert to their own units.

Derivative schemes on the non-uniform grid (option ``derivative``):

``gradient`` (default)
    ``numpy.gradient(Y, x, edge_order=1)``: second-order accurate central differences on a
    non-uniform grid in the interior (exact for quadratics), one-sided first-order at both ends.
    One row per model (state = the model's scores).
``forward``
    One row per interval between consecutive sizes: state = the mean scores of the two models,
    derivative = (Y[i+1] - Y[i]) / (x[i+1] - x[i]) (second-order accurate at the midpoint).
    These are the rows the term-stability bootstrap resamples ("intervals").

Choices where the paper is silent (docs/METHODS.md §2.13): a model with a blank score in any benchmark used is left out of the
trajectory (listed in ``dropped``); a second model with the same N as a previous one in a family is
left out (the derivative between them is undefined); a family needs >= 2 models to give rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from cape_hpc.analysis import check_columns
from cape_hpc.analysis.coupling import interval_rows
from cape_hpc.dynamics.options import DERIVATIVES
from cape_hpc.errors import DataError, OptionError


@dataclass
class Trajectory:
    """One family's models sorted by N: ``x = log10 N``, scores ``Y[n, p]`` in percent."""

    family: str
    models: list[str]
    x: np.ndarray            # log10 N, increasing
    Y: np.ndarray            # [n, p] scores in percent
    benchmarks: tuple[str, ...]
    dropped: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.x)


def check_benchmarks(df: pd.DataFrame, benchmarks: Sequence[str]) -> tuple[str, ...]:
    """The state's columns: at least one, each a numeric column of ``df`` (``check_columns``), none twice."""
    benchmarks = tuple(benchmarks)
    if not benchmarks:
        raise OptionError("option '--benchmarks': at least one score column is needed")
    check_columns(df, benchmarks, "--benchmarks")
    if len(set(benchmarks)) != len(benchmarks):
        raise OptionError(f"option '--benchmarks': repeated column in {list(benchmarks)}")
    return benchmarks


def family_trajectory(df: pd.DataFrame, family: str, benchmarks: Sequence[str],
                      option: str = "--train", column: str = "params") -> Trajectory:
    """One family's trajectory (models with every benchmark reported, sorted by N, ties by name); N is
    ``column`` (``cape_hpc.analysis.scale.SCALE`` after ``on_scale``: N or the training step)."""
    for c in ("model", "family", column):
        if c not in df.columns:
            raise DataError(f"{df.attrs.get('path', '<DataFrame>')}: scores table lacks column {c!r}")
    benchmarks = check_benchmarks(df, benchmarks)
    g = df.loc[df["family"] == family]
    if g.empty:
        raise OptionError(f"option '{option}': unknown family {family!r} "
                          f"(known: {', '.join(sorted(map(str, df['family'].unique())))})")
    g = g.sort_values([column, "model"], kind="mergesort")
    mask = g[list(benchmarks)].notna().all(axis=1).to_numpy()
    dropped = [str(m) for m in g.loc[~mask, "model"]]
    g = g.loc[mask]
    keep = ~g[column].duplicated(keep="first").to_numpy()
    dropped += [f"{m} (same N as a smaller-named model)" for m in g.loc[~keep, "model"]]
    g = g.loc[keep]
    return Trajectory(str(family), [str(m) for m in g["model"]], np.log10(g[column].to_numpy(float)),
                      g[list(benchmarks)].to_numpy(float), benchmarks, dropped)


def trajectories(df: pd.DataFrame, families: Sequence[str] | str, benchmarks: Sequence[str],
                 option: str = "--train", min_models: int = 2, column: str = "params") -> list[Trajectory]:
    if isinstance(families, str):
        families = [families]
    out = []
    for f in families:
        t = family_trajectory(df, f, benchmarks, option, column)
        if t.n < min_models:
            raise DataError(f"{df.attrs.get('path', '<DataFrame>')}: family {f!r} (option '{option}') has "
                            f"{t.n} model(s) with all of {', '.join(benchmarks)}; need >= {min_models}"
                            + (f" (left out: {', '.join(t.dropped)})" if t.dropped else ""))
        out.append(t)
    return out


def derivative_rows(traj: Trajectory, derivative: str = "gradient", scale: float = 1.0,
                    edge_order: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x_rows, states[m, p], dY/dlog10N[m, p]) for one trajectory, scores multiplied by ``scale``."""
    if derivative not in DERIVATIVES:
        raise OptionError(f"option '--derivative': {derivative!r} is not one of {', '.join(DERIVATIVES)}")
    Y = traj.Y * scale
    x = traj.x
    if traj.n < 2:
        return np.empty(0), np.empty((0, Y.shape[1])), np.empty((0, Y.shape[1]))
    if derivative == "gradient":
        return x.copy(), Y.copy(), np.gradient(Y, x, axis=0, edge_order=edge_order)
    return interval_rows(x, Y)  # a trajectory has no repeated N


def stacked_rows(trajs: Sequence[Trajectory], derivative: str, scale: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of several trajectories stacked, plus the int64 family index of each row."""
    xs, S, D, fam = [], [], [], []
    for k, t in enumerate(trajs):
        x, s, d = derivative_rows(t, derivative, scale)
        xs.append(x)
        S.append(s)
        D.append(d)
        fam.append(np.full(len(x), k, dtype=np.int64))
    p = len(trajs[0].benchmarks)
    if not S:
        return np.empty((0, p)), np.empty((0, p)), np.empty(0, np.int64)
    return np.concatenate(S), np.concatenate(D), np.concatenate(fam)
