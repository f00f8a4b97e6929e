"""Helpers shared by the analysis modules: table checks, provenance, family ordering, the OLS line.

Conventions used by every analysis module (docs/METHODS.md §1):

- ``x = log10(N)`` with N the parameter count, or the training step under ``--scale step``
  (``cape_hpc.analysis.scale``: the one place the scale column is chosen).
- Scores in the tables are percent; ``units`` (``cape_hpc.analysis.options.UnitsOptions``) scales
  them, and thresholds are given in the same units.
- A model whose score is blank (not reported) in a column an analysis needs is left out of that
  analysis; the result lists such models in ``dropped``.
- Within a family, models are ordered by N, ties broken by model name (the interval between two
  models of equal N is undefined anyway).
"""
from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from cape_hpc.analysis.options import PHASES
from cape_hpc.errors import DataError, OptionError
from cape_hpc.options import Options
from cape_hpc.schema import Provenance

if TYPE_CHECKING:  # annotations only: pandas is imported where it is used (`cape nc` runs without it)
    import pandas as pd

__all__ = ["PHASES", "check_columns", "check_pair", "require_table_columns", "table_sha256", "provenance",
           "select_families", "family_order", "family_groups", "split_by", "sort_by_n", "complete_rows",
           "pearson_rows", "ols_line", "ols_rows", "r_squared"]


def _table_name(df: pd.DataFrame) -> str:
    return str(df.attrs.get("path", "<DataFrame>"))


def check_columns(df: pd.DataFrame, columns: Sequence[str], option: str = "--pair") -> None:
    """Raise OptionError naming the option when a requested column is not a numeric column of the table."""
    for c in columns:
        if c not in df.columns:
            raise OptionError(f"option '{option}': unknown column {c!r} "
                              f"(table {_table_name(df)} has: {', '.join(str(c) for c in df.columns if not str(c).startswith('_'))})")
        if not _numeric(df[c]):
            raise OptionError(f"option '{option}': column {c!r} of {_table_name(df)} is not numeric")


def _numeric(column) -> bool:
    """A numeric column: a numpy array of numbers or bools, else pandas' rule for a Series."""
    if isinstance(column, np.ndarray):
        return column.dtype.kind in "biuf"
    import pandas as pd

    return pd.api.types.is_numeric_dtype(column)


def check_pair(df: pd.DataFrame, b1: str, b2: str, option: str = "--pair") -> None:
    """Both columns of a pair are numeric columns of the table (that they differ, the options check)."""
    check_columns(df, (b1, b2), option)


def require_table_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{_table_name(df)}: {what} table lacks column(s) {', '.join(map(repr, missing))}")


def table_sha256(df: pd.DataFrame) -> str:
    """The file hash recorded by the loader, else a hash of the table's CSV text."""
    sha = df.attrs.get("sha256")
    if sha:
        return str(sha)
    return hashlib.sha256(df.to_csv(index=False).encode()).hexdigest()


def provenance(method: str, opts: Options, inputs: dict[str, pd.DataFrame] | None = None,
               seed: int | None = None, n_resamples: int | None = None) -> Provenance:
    """The provenance of a result: the method's options stored unchanged (``opts.to_dict()``)."""
    return Provenance(method=method, options=opts.to_dict(), seed=seed, n_resamples=n_resamples,
                      inputs={k: table_sha256(v) for k, v in (inputs or {}).items()})


def select_families(df: pd.DataFrame, families: Sequence[str] | str | None,
                    option: str = "--families") -> pd.DataFrame:
    """Rows of the named families (all when None); unknown names raise OptionError.  ``df``: a
    DataFrame or a ``cape_hpc.io.scores.ScoreColumns``."""
    require_table_columns(df, ("family",), "scores")
    if families is None:
        return df
    if isinstance(families, str):
        families = [families]
    known = set(df["family"])
    unknown = [f for f in families if f not in known]
    if unknown:
        raise OptionError(f"option '{option}': unknown famil{'y' if len(unknown) == 1 else 'ies'} "
                          f"{', '.join(map(repr, unknown))} (known: {', '.join(sorted(known))})")
    return df.take(np.flatnonzero(np.isin(np.asarray(df["family"], dtype=object), list(families))))


def family_order(df: pd.DataFrame) -> list[str]:
    """Families in order of first appearance in the table (stable, as the user wrote them)."""
    return list(dict.fromkeys(df["family"]))


def family_groups(df: pd.DataFrame, column: str = "family") -> list[tuple[str, pd.DataFrame]]:
    """(name, rows) of every group of ``column`` in order of first appearance, in one pass over the
    table (``groupby``): per-family work costs O(rows), never a filter of the whole table per family."""
    if df.empty:
        return []
    return [(k, g) for k, g in df.groupby(column, sort=False, dropna=False)]


def split_by(codes_of: Sequence, values: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(group, values of its rows) for each distinct label of ``codes_of`` in order of first
    appearance: one sort, not a mask per group."""
    import pandas as pd

    codes, uniq = pd.factorize(pd.Series(list(codes_of)), sort=False)
    order = np.argsort(codes, kind="stable")
    parts = np.split(np.asarray(values)[order], np.cumsum(np.bincount(codes, minlength=len(uniq)))[:-1])
    return list(zip(uniq, parts))


def sort_by_n(df: pd.DataFrame, column: str = "params") -> pd.DataFrame:
    """Rows sorted by N (``column``: the scale column of ``cape_hpc.analysis.scale.on_scale``), ties by
    model name."""
    return df.sort_values([column, "model"], kind="mergesort")


def _present(column) -> np.ndarray:
    """bool[rows]: the cells that are not blank (NaN or None) of a Series or a numpy column."""
    if hasattr(column, "notna"):
        return column.notna().to_numpy()
    column = np.asarray(column)
    if column.dtype.kind == "f":
        return ~np.isnan(column)
    return np.array([v is not None and v == v for v in column], dtype=bool)


def complete_rows(df: pd.DataFrame, columns: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """(rows with every column present, names of the models dropped for a blank cell); ``df`` a
    DataFrame or a ``cape_hpc.io.scores.ScoreColumns``."""
    mask = np.logical_and.reduce([_present(df[c]) for c in columns]) if len(columns) else np.ones(len(df), bool)
    return df.take(np.flatnonzero(mask)), [str(m) for m in np.asarray(df["model"], dtype=object)[~mask]]


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis of x and y (broadcast against each other; NaN when a row is
    constant): the one row-wise correlation of the permutation controls."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(-1) / np.sqrt((xc ** 2).sum(-1) * (yc ** 2).sum(-1))


def ols_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope and intercept of y = slope * x + intercept (NaN when x is constant: tested
    on x itself, as the mean of equal values can differ from them by rounding).  ``ols_rows`` of one row."""
    slope, icpt = ols_rows(np.asarray(x, float)[None, :], np.asarray(y, float)[None, :])
    return float(slope[0]), float(icpt[0])


def ols_rows(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(slope [c], intercept [c]) of each row of y [c, m] on the same row of x [c, m] by least squares;
    NaN for a row with m < 2 or a constant x.  Row reductions along the last axis are numpy's 1-D
    reductions, so a batch of bootstrap fits equals the fits one at a time bit for bit."""
    c, m = x.shape
    slope, icpt = np.full(c, np.nan), np.full(c, np.nan)
    live = np.flatnonzero(~np.all(x == x[:, :1], axis=1)) if m >= 2 else np.zeros(0, np.int64)
    if live.size:
        xs, ys = x[live], y[live]
        xm, ym = xs.mean(1), ys.mean(1)
        dx = xs - xm[:, None]
        sxx = (dx ** 2).sum(1)
        ok = sxx != 0.0
        s = (dx[ok] * (ys[ok] - ym[ok, None])).sum(1) / sxx[ok]
        slope[live[ok]] = s
        icpt[live[ok]] = ym[ok] - s * xm[ok]
    return slope, icpt


def r_squared(y: np.ndarray, fitted: np.ndarray) -> float:
    """1 - SS_res / SS_tot (NaN when y is constant)."""
    y = np.asarray(y, float)
    ss_res = float(((y - np.asarray(fitted, float)) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
