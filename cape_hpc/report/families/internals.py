"""The internals figures (docs/METHODS.md §3.4): per model, the per-layer coupling curves and the
layer x head heat map of the per-head coupling (one static figure and two charts per model)."""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from cape_hpc.report.data import Results, Skip
from cape_hpc.report.layout import InternalsResult
from cape_hpc.report.registry import Card, FigureSpec
from cape_hpc.report.style import axis_dtick, found, label_axes, layout, new_figure


def internals(res: Results) -> dict[str, Any]:
    out = []
    for path, r in found(res, InternalsResult, "/internals", "cape internals --out"):
        if not r.layers:
            continue
        heads = r.head_coupling if "heads" in r.taps else None  # rows exist (NaN) even when untapped
        out.append({"model": path.rsplit("/", 1)[-1], "path": path,
                    "layer_coupling": r.layer_coupling.tolist(),
                    "layer_pairwise_mean": r.layer_pairwise_mean.tolist(),
                    "layer_competing_fraction": r.layer_competing_fraction.tolist(),
                    "d_rep": r.d_rep.tolist(),
                    "head_coupling": heads.tolist() if heads is not None else None,
                    "complete": r.complete})
    if not out:
        raise Skip("every /internals/<model> group has no layers (the residual tap was off)")
    return {"models": out, "source": "/internals"}


def _curves(m: dict) -> list[tuple[str, list, str, str]]:
    """(label, values, matplotlib format, plotly dash) of the layer curves a model has: the coupling,
    the mean pairwise cosine and the competing fraction."""
    n = len(m["layer_coupling"])
    out = [("cos(mean R, mean T)", m["layer_coupling"], "o-", "")]
    if len(m["layer_pairwise_mean"]) == n:
        out.append(("mean pairwise cosine", m["layer_pairwise_mean"], "s--", "dash"))
    if len(m["layer_competing_fraction"]) == n:
        out.append(("fraction < -0.5", m["layer_competing_fraction"], ":", "dot"))
    return out


def _heads_map(fig, ax, model: str, H: np.ndarray) -> None:
    from matplotlib.ticker import MaxNLocator

    lim = max(float(np.nanmax(np.abs(H))), 1e-9) if np.isfinite(H).any() else 1.0
    im = ax.imshow(H.T, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
    fig.colorbar(im, ax=ax, label="cos(mean R, mean T)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    label_axes(ax, "layer", "head", f"{model}: per-head coupling", legend=None)


def fig_model(m: dict):
    """One model: its layer curves, and its per-head heat map when the heads were tapped."""
    has_heads = m["head_coupling"] is not None
    fig, axes = new_figure(ncols=2 if has_heads else 1, width=5.6, height=4.4)
    ax = axes[0]
    L = np.arange(len(m["layer_coupling"]))
    for label, y, fmt, _ in _curves(m):
        ax.plot(L, y, fmt, **({"ms": 3} if "o" in fmt or "s" in fmt else {}), label=label)
    ax.axhline(0, color="k", lw=0.7)
    label_axes(ax, "layer", "coupling", f"{m['model']}: per-layer coupling")
    if has_heads:
        _heads_map(fig, axes[1], m["model"], np.asarray(m["head_coupling"], float))
    return fig


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def fig_internals(d: dict) -> list[tuple[str, Any]]:
    """One figure per model, named internals_<model>."""
    return [(f"internals_{_safe(m['model'])}", fig_model(m)) for m in d["models"]]


def _layer_rows(m: dict) -> list[dict]:
    rows = []
    for i, c in enumerate(m["layer_coupling"]):
        row = {"model": m["model"], "layer": i, "layer_coupling": c}
        if len(m["layer_competing_fraction"]) > i:
            row["competing_fraction"] = m["layer_competing_fraction"][i]
        if m["head_coupling"] is not None:
            hc = np.asarray(m["head_coupling"][i], float)
            row["heads: mean"] = float(np.nanmean(hc)) if hc.size else None
            row["heads: min"] = float(np.nanmin(hc)) if hc.size else None
        rows.append(row)
    return rows


def _model_cards(m: dict) -> list[Card]:
    L = list(range(len(m["layer_coupling"])))
    source = f"/internals/{m['model']}"
    traces = [{"type": "scatter", "mode": "lines" if dash else "lines+markers", "name": label, "x": L, "y": y,
               **({"line": {"dash": dash}} if dash else {})} for label, y, _, dash in _curves(m)]
    lay = layout(f"{m['model']}: per-layer coupling", "layer", "coupling")
    lay["xaxis"]["dtick"] = axis_dtick(len(L))
    cards = [Card(f"internals: {m['model']} layers", {"data": traces, "layout": lay}, _layer_rows(m), source,
                  model=m["model"])]
    if m["head_coupling"] is not None:
        H = np.asarray(m["head_coupling"], float)
        lim = float(np.nanmax(np.abs(H))) if np.isfinite(H).any() else 1.0
        spec = {"data": [{
            "type": "heatmap", "z": H.T.tolist(), "x": L, "y": list(range(H.shape[1])), "colorscale": "RdBu",
            "zmin": -lim, "zmax": lim, "colorbar": {"title": {"text": "cos"}},
            "hovertemplate": "layer %{x}, head %{y}: %{z:.3f}<extra></extra>"}],
            "layout": layout(f"{m['model']}: per-head coupling", "layer", "head",
                             xaxis={"title": {"text": "layer"}, "dtick": axis_dtick(len(L))},
                             yaxis={"title": {"text": "head"}, "dtick": axis_dtick(H.shape[1])})}
        rows = [{"model": m["model"], "layer": i, **{f"head {j}": v for j, v in enumerate(row)}}
                for i, row in enumerate(m["head_coupling"])]
        cards.append(Card(f"internals: {m['model']} heads", spec, rows, source, model=m["model"]))
    return cards


def chart_internals(d: dict) -> list[Card]:
    """Per model: the layer curves (table: per layer) and the head heat map (table: layer x head)."""
    return [card for m in d["models"] for card in _model_cards(m)]


FIGURES = (
    FigureSpec("internals", "Internals (per-layer and per-head coupling)", "/internals/<model>", internals,
               fig_internals, chart_internals),
)
