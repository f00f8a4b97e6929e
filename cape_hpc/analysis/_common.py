"""Helpers shared by the analysis modules: option checks, units, provenance, family ordering.

Conventions used by every analysis module (choices where SPEC is silent):

- ``x = log10(N)`` with N the parameter count.
- Scores in the tables are percent.  ``units="fraction"`` divides them by 100 before an analysis
  whose threshold or fit depends on the scale; thresholds given in the same units as the scores.
- A model whose score is blank (not reported) in a column an analysis needs is left out of that
  analysis; the result lists such models in ``dropped``.
- Within a family, models are ordered by N, ties broken by model name (the interval between two
  models of equal N is undefined anyway).
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from cape_hpc.errors import DataError, OptionError
from cape_hpc.schema import Provenance

UNITS = ("percent", "fraction")
PHASES = ("tax", "transition", "bonus")


def check_choice(option: str, value: Any, choices: Sequence[Any]) -> Any:
    if value not in choices:
        raise OptionError(f"option '{option}': {value!r} is not one of {', '.join(map(str, choices))}")
    return value


def check_positive_int(option: str, value: Any, minimum: int = 1) -> int:
    try:
        iv = int(value)
    except (TypeError, ValueError):
        raise OptionError(f"option '{option}': {value!r} is not an integer") from None
    if iv != value or iv < minimum:
        raise OptionError(f"option '{option}': must be an integer >= {minimum}, got {value!r}")
    return iv


def check_finite(option: str, value: Any, *, nonneg: bool = False, positive: bool = False) -> float:
    try:
        fv = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"option '{option}': {value!r} is not a number") from None
    if not math.isfinite(fv):
        raise OptionError(f"option '{option}': must be finite, got {value!r}")
    if nonneg and fv < 0:
        raise OptionError(f"option '{option}': must be >= 0, got {value!r}")
    if positive and fv <= 0:
        raise OptionError(f"option '{option}': must be > 0, got {value!r}")
    return fv


def check_levels(levels: Iterable[float]) -> tuple[float, ...]:
    out = tuple(float(v) for v in levels)
    if not out or any(not 0 < v < 1 for v in out):
        raise OptionError(f"option 'levels': confidence levels must lie in (0, 1), got {list(levels)!r}")
    return out


def check_columns(df: pd.DataFrame, columns: Sequence[str], option: str = "pair") -> None:
    """Raise OptionError naming the option when a requested column is not in the table."""
    for c in columns:
        if c not in df.columns:
            raise OptionError(f"option '{option}': unknown column {c!r} "
                              f"(table {df.attrs.get('path', '<DataFrame>')} has: {', '.join(map(str, df.columns))})")


def check_pair(df: pd.DataFrame, b1: str, b2: str, option: str = "pair") -> None:
    check_columns(df, (b1, b2), option)
    if b1 == b2:
        raise OptionError(f"option '{option}': the two columns must differ, got {b1!r} twice")
    for c in (b1, b2):
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise OptionError(f"option '{option}': column {c!r} is not numeric")


def check_units(units: str) -> float:
    """The factor that converts the tables' percent into the requested units."""
    check_choice("units", units, UNITS)
    return 1.0 if units == "percent" else 0.01


def require_table_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{df.attrs.get('path', '<DataFrame>')}: {what} table lacks column(s) "
                        f"{', '.join(map(repr, missing))}")


def table_sha256(df: pd.DataFrame) -> str:
    """The file hash recorded by the loader, else a hash of the table's CSV text."""
    sha = df.attrs.get("sha256")
    if sha:
        return str(sha)
    return hashlib.sha256(df.to_csv(index=False).encode()).hexdigest()


def provenance(method: str, options: dict[str, Any], inputs: dict[str, pd.DataFrame] | None = None,
               seed: int | None = None, n_resamples: int | None = None) -> Provenance:
    return Provenance(method=method, options=dict(options), seed=seed, n_resamples=n_resamples,
                      inputs={k: table_sha256(v) for k, v in (inputs or {}).items()})


def select_families(df: pd.DataFrame, families: Sequence[str] | str | None,
                    option: str = "families") -> pd.DataFrame:
    """Rows of the named families (all when None); unknown names raise OptionError."""
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
    return df.loc[df["family"].isin(list(families))]


def family_order(df: pd.DataFrame) -> list[str]:
    """Families in order of first appearance in the table (stable, as the user wrote them)."""
    return list(dict.fromkeys(df["family"]))


def sort_by_n(df: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by N, ties by model name."""
    return df.sort_values(["params", "model"], kind="mergesort")


def complete_rows(df: pd.DataFrame, columns: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """(rows with every column present, names of the models dropped for a blank cell)."""
    mask = df[list(columns)].notna().all(axis=1)
    return df.loc[mask], [str(m) for m in df.loc[~mask, "model"]]


def log10n(df: pd.DataFrame) -> np.ndarray:
    return np.log10(df["params"].to_numpy(dtype=float))


def ols_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope and intercept of y = slope * x + intercept (NaN when x is constant)."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if len(x) < 2:
        return math.nan, math.nan
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    if sxx == 0.0:
        return math.nan, math.nan
    slope = float(((x - xm) * (y - ym)).sum() / sxx)
    return slope, float(ym - slope * xm)
