"""Internal coupling as a state variable of the ODE beside the benchmark scores (docs/METHODS.md §2.13).

A state entry ``internal:<quantity>`` (``quantity`` one of :data:`INTERNAL_QUANTITIES`: the last
layer's coupling, the mean or the smallest layer coupling, the mean head coupling, as in the
cross-model table of docs/METHODS.md §3.10) is a column of the joined table named by the entry
itself.  It holds ``100 x`` the coupling (a cosine), so that in the dynamics' default ``fraction``
units the state variable *is* the cosine, on the scale of the fractional scores, and in ``percent``
units it is a "percent of full alignment" like the scores.  Predictions of an internal variable
are reported in the same form.

The internals come as a plain table (one row per model: ``model`` and one column per quantity, the
couplings as cosines) that the caller builds from the cross-model table (``cape dynamics
--internals FILE.h5`` reads it with ``cape_hpc.crossmodel.table``; this package does not import
the cross-model code).  The join is by model name (exact, else case-insensitive); every model of
the families the run uses must have internals, else a ``DataError`` names the models that lack them.

Errors: the pooled holdout and fit errors (and the baselines') are over the benchmark columns only,
so that a run with internals is scored on the same cells as one without and as the polynomial
baselines; the per-column errors list the internal variables too.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from cape_hpc.errors import DataError, OptionError

if TYPE_CHECKING:  # annotations only: pandas is imported where it is used (CLI start-up)
    import pandas as pd

__all__ = ["INTERNAL_PREFIX", "INTERNAL_QUANTITIES", "INTERNAL_SCALE", "is_internal", "internal_quantity",
           "score_columns", "join_internals"]

INTERNAL_PREFIX = "internal:"
#: the cross-model table's coupling summaries (``cape_hpc.crossmodel.results.QUANTITIES``)
INTERNAL_QUANTITIES = ("final", "mean", "min", "head_net")
#: a coupling c enters the state table as INTERNAL_SCALE * c (percent-like; c itself in fraction units)
INTERNAL_SCALE = 100.0


def is_internal(name: str) -> bool:
    return str(name).startswith(INTERNAL_PREFIX)


def internal_quantity(name: str, option: str = "--state") -> str:
    """'internal:final' -> 'final' (OptionError naming the option for an unknown quantity)."""
    q = str(name)[len(INTERNAL_PREFIX):]
    if q not in INTERNAL_QUANTITIES:
        raise OptionError(f"option '{option}': {name!r} is not one of "
                          f"{', '.join(INTERNAL_PREFIX + k for k in INTERNAL_QUANTITIES)}")
    return q


def score_columns(state: Sequence[str]) -> list[int]:
    """Indices of the benchmark (non-internal) columns of a state."""
    return [j for j, s in enumerate(state) if not is_internal(s)]


def join_internals(df: pd.DataFrame, internals: pd.DataFrame | None, state: Sequence[str],
                   families: Sequence[str]) -> pd.DataFrame:
    """``df`` with one column per ``internal:<quantity>`` entry of ``state`` (100 x the coupling),
    joined by model name for the models of ``families`` (other rows get NaN and are not used).

    DataError naming the models of those families that have no internals (or a NaN value)."""
    import numpy as np  # here: dynamics.options imports this module's name rules (the CLI starts without pandas)
    import pandas as pd

    wanted = [s for s in state if is_internal(s)]
    if not wanted:
        return df
    source = (internals.attrs.get("path", "<internals table>") if internals is not None else "")
    if internals is None:
        raise OptionError(f"option '--state': {', '.join(wanted)} needs model internals (--internals FILE.h5: a "
                          f"merged sweep file, `cape internals --out` or `cape crossmodel --out` output)")
    if "model" not in internals.columns:
        raise DataError(f"{source}: the internals table has no 'model' column")
    quantities = [internal_quantity(s) for s in wanted]
    for q in quantities:
        if q not in internals.columns:
            raise DataError(f"{source}: the internals table has no {q!r} column")
    names = internals["model"].astype(str).tolist()
    exact = {m: i for i, m in enumerate(names)}
    lower: dict[str, int] = {}
    for i, m in enumerate(names):
        lower.setdefault(m.lower(), i)
    out = df.copy()
    out.attrs = dict(df.attrs)
    cols = {s: np.full(len(out), math.nan) for s in wanted}
    use = out["family"].isin(list(families)).to_numpy() if "family" in out.columns else np.zeros(len(out), bool)
    scored = [s for s in state if not is_internal(s) and s in out.columns]
    if scored:  # a model left out for a blank score needs no internals
        use = use & out[scored].notna().all(axis=1).to_numpy()
    lacking: list[str] = []
    for k, (model, family) in enumerate(zip(out["model"].astype(str), out.get("family", pd.Series([""] * len(out))))):
        if not use[k]:
            continue
        i = exact.get(model, lower.get(model.lower()))
        vals = [math.nan] * len(wanted) if i is None else [float(internals[q].iloc[i]) for q in quantities]
        if i is None or not all(math.isfinite(v) for v in vals):
            what = "" if i is None else f" ({', '.join(q for q, v in zip(quantities, vals) if not math.isfinite(v))}"\
                                        f" not measured)"
            lacking.append(f"{model} [{family}]{what}")
            continue
        for s, v in zip(wanted, vals):
            cols[s][k] = INTERNAL_SCALE * v
    if lacking:
        have = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise DataError(f"{source}: no internals for {len(lacking)} model(s) of the families used "
                        f"({', '.join(families)}): {', '.join(lacking)} (internals have: {have or 'none'})")
    for s in wanted:
        out[s] = cols[s]
    return out
