"""The scale axis along which the analyses order and fit models (docs/METHODS.md §1): the parameter
count N (``--scale params``, the default) or the training step of a checkpoint (``--scale step``).

One place makes the choice: ``on_scale(df, opts)`` returns the table with the column ``SCALE``
(float64, [rows]) holding N or the step, checked; every analysis that orders models by size reads
``SCALE`` (sorted by ``sort_by_n(df, SCALE)``, x = log10 of it), never ``params`` itself.  Under
``--scale step`` the results' N (``Interval.n``, ``CouplingResult.params``, ``NcEstimate.nc``, the
log10 N of every fit) are training steps: N_c is a critical step.  The axis used is stored in every
result's provenance (``options['scale_axis']``) and printed in the tables' titles.

Checks under ``--scale step`` (DataError, one line): the table has a ``step`` column (the imported
and merged score tables have one, parsed from the checkpoint revision); every row used holds a
finite step > 0 (the row and model named).  ``params`` is checked by the table's loader (> 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from cape_hpc.errors import DataError

if TYPE_CHECKING:  # annotations only: pandas is imported where it is used (CLI start-up)
    import numpy as np
    import pandas as pd

__all__ = ["SCALE", "Axis", "SCALE_AXES", "axis_of", "on_scale", "scale_values"]

SCALE = "_scale"   # the column on_scale adds: N or the training step of each row


@dataclass(frozen=True)
class Axis:
    """One scale axis: the table column, the symbol printed for it and its unit."""

    column: str
    symbol: str        # 'N' | 'step'
    unit: str          # 'parameters' | 'training steps'
    per: float         # printed values are divided by this (N in billions; steps as they are)
    suffix: str        # printed after such a value ('B' | '')

    def label(self, what: str = "") -> str:
        """The header of a printed value on this axis: 'N (B)', 'N_c (B)', 'step', 'step_c'."""
        name = f"{self.symbol}{what}"
        return f"{name} ({self.suffix})" if self.suffix else name

    def printed(self, value: float) -> float:
        """A value on this axis as printed (N in billions, steps as they are)."""
        return value / self.per

    def text(self, value: float) -> str:
        """'1.4B' (N) or '1.43e+05' (step): a value with its suffix, 3 significant digits."""
        return f"{value / self.per:.3g}{self.suffix}"


SCALE_AXES = {"params": Axis("params", "N", "parameters", 1e9, "B"),
              "step": Axis("step", "step", "training steps", 1.0, "")}


def axis_of(opts_or_name) -> Axis:
    """The ``Axis`` of an options object (its ``scale_axis``; params when it has none), of a
    result's provenance options (a dict) or of a name."""
    if isinstance(opts_or_name, str):
        name = opts_or_name
    elif isinstance(opts_or_name, dict):
        name = opts_or_name.get("scale_axis", "params")
    else:
        name = getattr(opts_or_name, "scale_axis", "params")
    return SCALE_AXES[name]


def scale_values(df: pd.DataFrame, opts, families: Sequence[str] | None = None) -> np.ndarray:
    """[rows] float64: N or the training step of every row of ``df`` (``opts.scale_axis``), checked
    (module doc) on the rows of ``families`` (all rows when None); DataError naming the file and the
    column or the row."""
    axis = axis_of(opts)
    if axis.column == "params":   # a DataFrame's Series, or a numpy column (cape_hpc.io.scores.ScoreColumns)
        import numpy as np

        return np.asarray(df["params"], dtype=float)
    path = df.attrs.get("path", "<DataFrame>")
    if "step" not in df.columns:
        raise DataError(f"{path}: no column 'step' (--scale step orders models by training step; "
                        f"columns: {', '.join(str(c) for c in df.columns if not str(c).startswith('_'))})")
    import numpy as np
    import pandas as pd

    values = pd.to_numeric(df["step"], errors="coerce").to_numpy(float)
    used = np.ones(len(df), bool) if families is None else df["family"].isin(list(families)).to_numpy()
    bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)) & used)
    if len(bad):
        i = bad[0]
        row = df["_row"].iloc[i] if "_row" in df.columns else df.index[i]
        cell = df["step"].iloc[i]
        model = f" (model {df['model'].iloc[i]!r})" if "model" in df.columns else ""
        shown = "blank" if cell is None or (isinstance(cell, float) and math.isnan(cell)) or str(cell).strip() == "" \
            else repr(cell)
        raise DataError(f"{path}: row {row}{model}, column 'step': {shown} is not a training step > 0 "
                        f"(--scale step){f'; {len(bad) - 1} more such row(s)' if len(bad) > 1 else ''}")
    return values


def on_scale(df: pd.DataFrame, opts, families: Sequence[str] | None = None) -> pd.DataFrame:
    """``df`` with the column ``SCALE`` (N or the step, ``scale_values``, checked on the rows of
    ``families``) added; attrs kept."""
    out = df.assign(**{SCALE: scale_values(df, opts, families)})
    out.attrs = dict(df.attrs)
    return out
