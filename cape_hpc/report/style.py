"""What every figure family shares: colours, interval bars, the matplotlib canvas and axis labels,
the plotly layout, the skip note of a missing group, and the table behind a chart.

matplotlib is imported only when a static figure is drawn (``new_figure``), so the HTML report
(plotly only) does not import it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from cape_hpc.report.data import Results, Skip

PHASE_ORDER = ("tax", "transition", "bonus")
PHASE_COLORS = {"tax": "#d62728", "transition": "#7f7f7f", "bonus": "#2ca02c", "": "#1f77b4",
                "undefined": "#1f77b4"}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
           "#756bb1", "#636363"]
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "triangle-down", "cross", "x", "pentagon", "hexagon",
           "star", "triangle-left", "triangle-right", "hourglass", "bowtie", "circle-open", "square-open",
           "diamond-open", "star-open", "hexagon-open", "pentagon-open"]


# --------------------------------------------------------------------------- data

def found(res: Results, cls: type, prefix: str, command: str) -> list[tuple[str, Any]]:
    """Every stored ``cls`` under ``prefix`` (path, result); Skip naming the group and the command
    that writes it when there is none."""
    from cape_hpc.report.layout import GROUPS

    out = res.find(cls, prefix)
    if not out:
        raise Skip(f"no {GROUPS[cls]} group ({cls.__name__}) in {res.path} ({command})")
    return out


def error_bars(y, lo, hi) -> np.ndarray:
    """[2, n] error-bar lengths (below, above) from an interval; 0 where a bound is NaN or lies (by
    rounding, e.g. a Wilson bound of 1e-17 above a rate of 0) on the wrong side of the estimate."""
    y, lo, hi = (np.asarray(v, float) for v in (y, lo, hi))
    return np.clip(np.nan_to_num(np.vstack([y - lo, hi - y]), nan=0.0), 0.0, None)


def table(rows: list[dict]) -> dict:
    """The table behind a chart: {columns (first-seen order over the rows), rows (lists)}."""
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return {"columns": cols, "rows": [[r.get(c) for c in cols] for r in rows]}


# --------------------------------------------------------------------------- matplotlib

def new_figure(ncols: int = 1, width: float = 6.4, height: float = 4.4):
    """(Figure, [axes]) on one row, constrained layout, no pyplot state (``cape figures`` saves it)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols if ncols > 1 else width, height), layout="constrained")
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def label_axes(ax, xlabel: str, ylabel: str, title: str, *, ylim: tuple[float, float] | None = None,
               legend: float | None = 8, title_size: float | None = None, **legend_kw) -> None:
    """Axis labels, title, optional y range and legend (font size ``legend``; None: no legend)."""
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, **({"fontsize": title_size} if title_size else {}))
    if legend is not None:
        ax.legend(fontsize=legend, **legend_kw)


# --------------------------------------------------------------------------- plotly

def layout(title: str, xlab: str, ylab: str, **kw) -> dict:
    """The report's plotly layout: title, axis titles, margins, white paper; ``kw`` overrides."""
    lay = {"title": {"text": title, "font": {"size": 15}}, "xaxis": {"title": {"text": xlab}, "zeroline": False},
           "yaxis": {"title": {"text": ylab}}, "margin": {"l": 60, "r": 20, "t": 50, "b": 55},
           "legend": {"font": {"size": 10}}, "hovermode": "closest", "template": None,
           "paper_bgcolor": "white", "plot_bgcolor": "#fafafa"}
    lay.update(kw)
    return lay


def axis_dtick(n: int, most: int = 12) -> int:
    """Tick spacing of an integer axis of ``n`` positions (layers, heads): 1, 2, 5, 10, 20, 50, ...,
    the smallest giving at most ``most`` ticks (a 30-layer model: every 5th layer)."""
    step, k = 1, 0
    while n > most * step:
        k += 1
        step = (1, 2, 5)[k % 3] * 10 ** (k // 3)
    return step


def plotly_error(y, lo, hi) -> dict:
    """A plotly ``error_y`` / ``error_x`` of an interval (the bars of ``error_bars``)."""
    e = error_bars(y, lo, hi)
    return {"type": "data", "symmetric": False, "array": e[1].tolist(), "arrayminus": e[0].tolist(), "visible": True}
