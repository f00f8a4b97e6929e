"""The coupling figures (docs/METHODS.md §2.1-§2.4): the phase diagram (B1 vs B2 per family,
coloured by phase) and the running coupling gamma(N) with every N_c estimate and its interval."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from cape_hpc.report.data import Results, Skip, boot_interval
from cape_hpc.report.layout import CouplingResult, NcResult, PhaseResult
from cape_hpc.report.registry import FigureSpec
from cape_hpc.report.style import PALETTE, PHASE_COLORS, PHASE_ORDER, SYMBOLS, layout, new_figure, plotly_error


# --------------------------------------------------------------------------- data

def _coupling(res: Results) -> CouplingResult:
    cp = res.get("/analysis/coupling", CouplingResult)
    if not cp.intervals:
        raise Skip("/analysis/coupling has no intervals (no family with two sizes)")
    return cp


def model_points(res: Results) -> dict[str, Any]:
    """Per-model (family, model, N, B1, B2, phase), rebuilt from the coupling intervals.

    Each interval stores d_b1 and b1_mid (mean of its two models), so B1 = b1_mid +- d_b1/2 for the
    larger / smaller model; the phase of a model is its interval's phase (the smallest has none),
    or its phase in ``/analysis/phases`` when that group is stored.
    """
    cp = _coupling(res)
    ph = res.optional("/analysis/phases", PhaseResult)
    phase_of = {m.model: m.phase for m in ph.models} if ph is not None else {}
    fams: dict[str, dict[str, dict]] = {}
    for iv in cp.intervals:
        rows = fams.setdefault(iv.family, {})
        rows.setdefault(iv.prev_model, {"model": iv.prev_model, "N": iv.prev_n, "b1": iv.b1_mid - iv.d_b1 / 2,
                                        "b2": iv.b2_mid - iv.d_b2 / 2, "phase": phase_of.get(iv.prev_model, "")})
        rows[iv.model] = {"model": iv.model, "N": iv.n, "b1": iv.b1_mid + iv.d_b1 / 2, "b2": iv.b2_mid + iv.d_b2 / 2,
                          "phase": phase_of.get(iv.model, iv.phase)}
    out = []
    for fam, rows in fams.items():
        rs = sorted(rows.values(), key=lambda r: (r["N"], r["model"]))
        out.append({"family": fam, "model": [r["model"] for r in rs], "N": [r["N"] for r in rs],
                    "b1": [r["b1"] for r in rs], "b2": [r["b2"] for r in rs],
                    "phase": [r["phase"] for r in rs]})
    return {"b1": cp.b1, "b2": cp.b2, "units": cp.units, "families": out,
            "source": "/analysis/coupling" + (" + /analysis/phases" if ph is not None else "")}


def nc_entries(res: Results) -> list[dict]:
    """Every N_c estimate of every stored NcResult (``/analysis/nc/<key>``), as rows."""
    out = []
    for path, r in res.find(NcResult, "/analysis/nc"):
        for e in r.estimates:
            lo, hi = boot_interval(e.bootstrap, 0.95)
            out.append({"family": e.scope, "estimator": e.estimator, "log_nc": float(e.log10_nc), "lo": lo,
                        "hi": hi, "valid": math.isfinite(e.log10_nc), "path": path})
    return out


def running_gamma(res: Results) -> dict[str, Any]:
    cp = _coupling(res)
    fams: dict[str, dict[str, list]] = {}
    for iv in cp.intervals:
        f = fams.setdefault(iv.family, {"x": [], "gamma": [], "phase": [], "model": []})
        f["x"].append(iv.x_mid)
        f["gamma"].append(iv.gamma)
        f["phase"].append(iv.phase)
        f["model"].append(iv.model)
    nc = nc_entries(res)
    return {"b1": cp.b1, "b2": cp.b2, "tax_below": cp.tax_below, "bonus_above": cp.bonus_above,
            "families": [{"family": k, **v} for k, v in fams.items()], "nc": nc,
            "note": "" if nc else "no /analysis/nc/<estimator> group: N_c estimates not drawn",
            "source": "/analysis/coupling" + (" + /analysis/nc" if nc else "")}


def _gamma_range(d: dict) -> tuple[float, float] | None:
    """The gamma axis: the 2-98% quantiles of the finite gammas, padded by 15% and reaching at
    least [-0.5, 0.5] (a single huge gamma from a tiny dB1 should not flatten the rest); None when
    no gamma is finite."""
    finite = np.array([g for f in d["families"] for g in f["gamma"] if isinstance(g, float) and math.isfinite(g)])
    if not finite.size:
        return None
    lo, hi = np.quantile(finite, [0.02, 0.98])
    pad = 0.15 * (hi - lo + 1e-9)
    return float(min(lo - pad, -0.5)), float(max(hi + pad, 0.5))


# --------------------------------------------------------------------------- phase diagram

def fig_phase_diagram(d: dict):
    fig, (ax,) = new_figure(width=7.0, height=5.2)
    present = set()
    markers = "os^Dv<>pPX*h"
    for i, fam in enumerate(d["families"]):
        ax.plot(fam["b1"], fam["b2"], "-", color="0.6", lw=1, zorder=1, gid=f"traj:{fam['family']}",
                label=fam["family"])
        cols = [PHASE_COLORS.get(p, "#1f77b4") for p in fam["phase"]]
        present.update(fam["phase"])
        ax.scatter(fam["b1"], fam["b2"], c=cols, marker=markers[i % len(markers)], s=28, zorder=2,
                   edgecolors="k", linewidths=0.4)
        ax.annotate(fam["family"], (fam["b1"][-1], fam["b2"][-1]), fontsize=7, xytext=(3, 2),
                    textcoords="offset points")
    unit = " (%)" if d["units"] == "percent" else (" (fraction)" if d["units"] else "")
    ax.set_xlabel(f"{d['b1']}{unit}")
    ax.set_ylabel(f"{d['b2']}{unit}")
    ax.set_title(f"Phase diagram: {d['b1']} vs {d['b2']} trajectories per family")
    _phase_legend(ax, present)
    return fig


def _phase_legend(ax, phases_present) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=PHASE_COLORS[p], label=p or "no phase (smallest)")
               for p in (*PHASE_ORDER, "") if p in phases_present]
    if handles:
        leg = ax.legend(handles=handles, title="phase", loc="best", fontsize=8)
        ax.add_artist(leg)


def chart_phase_diagram(d: dict) -> dict:
    traces = []
    for i, fam in enumerate(d["families"]):
        traces.append({"type": "scatter", "mode": "lines+markers", "name": fam["family"],
                       "x": fam["b1"], "y": fam["b2"], "text": [f"{m} ({p or 'no phase'})"
                                                                for m, p in zip(fam["model"], fam["phase"])],
                       "line": {"color": "#aaaaaa", "width": 1},
                       "marker": {"color": [PHASE_COLORS.get(p, "#1f77b4") for p in fam["phase"]],
                                  "size": 9, "symbol": SYMBOLS[i % len(SYMBOLS)], "line": {"width": 0.5, "color": "#333"}},
                       "hovertemplate": "%{text}<br>" + d["b1"] + " %{x:.2f}<br>" + d["b2"] + " %{y:.2f}<extra>"
                                        + fam["family"] + "</extra>"})
    for p in PHASE_ORDER:  # legend entries for the phase colours
        traces.append({"type": "scatter", "mode": "markers", "x": [None], "y": [None], "name": f"phase: {p}",
                       "marker": {"color": PHASE_COLORS[p], "size": 9}, "legendgroup": "phases"})
    return {"data": traces, "layout": layout(f"Phase diagram: {d['b1']} vs {d['b2']} per family (colour: phase)",
                                             d["b1"], d["b2"], height=560, wide=True)}


def table_phase_diagram(d: dict) -> list[dict]:
    return [{"family": f["family"], "model": m, "N": n, d["b1"]: b1, d["b2"]: b2, "phase": p}
            for f in d["families"] for m, n, b1, b2, p in zip(f["model"], f["N"], f["b1"], f["b2"], f["phase"])]


# --------------------------------------------------------------------------- running coupling

def _nc_clip(nc: dict, lo: float, hi: float) -> str:
    """'' when the estimate is inside [lo, hi], else a short note (the panel is limited to the data)."""
    if lo <= nc["log_nc"] <= hi:
        return ""
    return f"{nc['estimator']}: 10^{nc['log_nc']:.1f} (off axis)"


def _gamma_band(ax, d: dict) -> None:
    ax.axhline(0, color="k", lw=0.7)
    ax.axhspan(d["tax_below"], d["bonus_above"], color="0.9", zorder=0)


def _nc_line(ax, nc: dict, color: str, gid: str, label: str | None = None) -> None:
    """An N_c estimate: a dashed line and its 95% interval as a band."""
    ax.axvline(nc["log_nc"], color=color, ls="--", lw=1.3, gid=gid, **({"label": label} if label else {}))
    if math.isfinite(nc["lo"]) and math.isfinite(nc["hi"]):
        ax.axvspan(nc["lo"], nc["hi"], color=color, alpha=0.12)


def _family_panel(ax, d: dict, fam: dict, est_color: dict, ylim, seen: set) -> None:
    """gamma(N) of one family with its N_c estimates (those off the data's range as a note)."""
    x = np.array(fam["x"], float)
    _gamma_band(ax, d)
    ax.plot(x, fam["gamma"], "o-", ms=3.5, lw=1.2, color="C0", label=fam["family"], gid=f"gamma:{fam['family']}")
    xlo, xhi = (np.nanmin(x) - 0.4, np.nanmax(x) + 0.4) if x.size else (8, 11)
    off = []
    for nc in d["nc"]:
        if nc["family"] != fam["family"] or not math.isfinite(nc["log_nc"]):
            continue
        lab = f"N_c {nc['estimator']}"
        _nc_line(ax, nc, est_color[nc["estimator"]], f"nc:{fam['family']}:{nc['estimator']}",
                 lab if lab not in seen else "_" + lab)
        seen.add(lab)
        note = _nc_clip(nc, xlo, xhi)
        if note:
            off.append(note)
    ax.set_xlim(xlo, xhi)
    ax.set_ylim(*ylim)
    ax.set_title(fam["family"], fontsize=9)
    if off:
        ax.text(0.02, 0.03, "\n".join(off), transform=ax.transAxes, fontsize=6.5, color="0.3")


def _pooled_panel(ax, d: dict, pooled: list[dict], est_color: dict, ylim) -> None:
    """Every family's gamma(N) in grey with the pooled N_c estimates."""
    _gamma_band(ax, d)
    for fam in d["families"]:
        ax.plot(fam["x"], fam["gamma"], "-", lw=0.8, color="0.6")
    for nc in pooled:
        _nc_line(ax, nc, est_color[nc["estimator"]], f"nc:pooled:{nc['estimator']}")
    ax.set_ylim(*ylim)
    ax.set_title("all families, pooled N_c", fontsize=9)


def _small_multiples_labels(fig, axes, npan: int, d: dict) -> None:
    """Hide the unused panels, label the outer axes, and one legend of the N_c estimators."""
    for ax in axes[npan:]:
        ax.set_visible(False)
    handles, labels = [], []
    for ax in axes[:npan]:
        if ax.get_subplotspec().is_last_row() or ax is axes[npan - 1]:
            ax.set_xlabel("log10 N (interval midpoint)", fontsize=8)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(f"gamma = d{d['b2']}/d{d['b1']}", fontsize=8)
        ax.tick_params(labelsize=7)
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab.startswith("N_c") and lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="outside upper right", ncol=len(labels), fontsize=8)


def fig_running_gamma(d: dict):
    """Small multiples: gamma(N) of each family with its N_c estimates (line) and 95% intervals (band);
    a last panel shows every family with the pooled estimates."""
    from matplotlib.figure import Figure

    fams = d["families"]
    pooled = [n for n in d["nc"] if n["family"] == "pooled" and math.isfinite(n["log_nc"])]
    npan = len(fams) + (1 if pooled else 0)
    ncols = min(4, npan)
    nrows = math.ceil(npan / ncols)
    fig = Figure(figsize=(3.6 * ncols, 2.7 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    est_color = {e: f"C{i + 1}" for i, e in enumerate(dict.fromkeys(n["estimator"] for n in d["nc"]))}
    ylim = _gamma_range(d) or (-1.0, 1.0)
    seen: set[str] = set()
    for ax, fam in zip(axes, fams):
        _family_panel(ax, d, fam, est_color, ylim, seen)
    if pooled:
        _pooled_panel(axes[len(fams)], d, pooled, est_color, ylim)
    _small_multiples_labels(fig, axes, npan, d)
    fig.suptitle("Running coupling gamma(N) per family, N_c estimates with 95% intervals"
                 + ("" if d["nc"] else " (no /analysis/nc in file)"), fontsize=11)
    return fig


def _nc_forest_traces(d: dict, rows_order: list[str]) -> list[dict]:
    """One trace per estimator: its N_c estimates with 95% intervals, one row per family / pooled."""
    traces = []
    ests = list(dict.fromkeys(n["estimator"] for n in d["nc"]))
    offsets = np.linspace(-0.25, 0.25, len(ests)) if len(ests) > 1 else np.zeros(1)
    symbols = ["diamond", "square", "triangle-up", "circle", "x"]
    for j, est in enumerate(ests):
        rows = [n for n in d["nc"] if n["estimator"] == est and isinstance(n["log_nc"], float)
                and math.isfinite(n["log_nc"])]
        if not rows:
            continue
        y = [r["log_nc"] for r in rows]
        traces.append({"type": "scatter", "mode": "markers", "name": f"N_c {est}", "xaxis": "x2", "yaxis": "y2",
                       "x": y, "y": [rows_order.index(r["family"]) + float(offsets[j]) for r in rows],
                       "marker": {"symbol": symbols[j % len(symbols)], "size": 9, "color": PALETTE[(j + 3) % len(PALETTE)]},
                       "error_x": {**plotly_error(y, [r["lo"] for r in rows], [r["hi"] for r in rows]),
                                   "color": PALETTE[(j + 3) % len(PALETTE)], "thickness": 1.5, "width": 3},
                       "text": [f"{r['family']} {est}: log10 N_c = {r['log_nc']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]"
                                for r in rows], "hovertemplate": "%{text}<extra></extra>"})
    return traces


def _running_gamma_layout(d: dict, rows_order: list[str], xs: list[float]) -> dict:
    """gamma on top, the N_c forest below, sharing the log10 N axis (limited to the data's range)."""
    shapes = [{"type": "rect", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": d["tax_below"],
               "y1": d["bonus_above"], "fillcolor": "#dddddd", "opacity": 0.5, "line": {"width": 0}, "layer": "below"}]
    forest_px, top_px = max(110, 30 * len(rows_order)), 380
    split = forest_px / (forest_px + top_px)
    lay = layout("Running coupling gamma(N) and N_c estimates (95% intervals)", "log10 N", "", shapes=shapes,
                 height=int(forest_px + top_px + 150))
    yrange = _gamma_range(d)
    if yrange is not None:
        lay["yaxis"] = {"title": {"text": f"gamma = d{d['b2']}/d{d['b1']}"}, "domain": [split + 0.08, 1.0],
                        "range": list(yrange)}
    else:
        lay["yaxis"] = {"title": {"text": "gamma"}, "domain": [split + 0.08, 1.0]}
    lay["yaxis2"] = {"domain": [0.0, split], "title": {"text": "N_c (95%)"}, "automargin": True, "anchor": "x2",
                     "tickvals": list(range(len(rows_order))), "ticktext": rows_order, "zeroline": False,
                     "range": [-0.6, len(rows_order) - 0.4]}
    lay["xaxis"] = {"anchor": "y", "showticklabels": True}
    lay["xaxis2"] = {"anchor": "y2", "matches": "x", "title": {"text": "log10 N (gamma: interval midpoint; below: N_c)"}}
    if xs:
        lay["xaxis"]["range"] = [min(xs) - 0.5, max(xs) + 0.5]
    lay["margin"] = {"l": 110, "r": 20, "t": 50, "b": 55}
    return lay


def chart_running_gamma(d: dict) -> dict:
    """gamma(N) per family (top) above a forest plot of every N_c estimate with its 95% interval
    (bottom, one row per family / pooled), sharing the log10 N axis (limited to the data's range)."""
    traces = []
    xs = []
    for i, f in enumerate(d["families"]):
        xs += [v for v in f["x"] if isinstance(v, float) and math.isfinite(v)]
        traces.append({"type": "scatter", "mode": "lines+markers", "name": f["family"], "x": f["x"], "y": f["gamma"],
                       "text": f["model"], "legendgroup": f["family"], "line": {"color": PALETTE[i % len(PALETTE)]},
                       "hovertemplate": "%{text}<br>log10 N %{x:.2f}<br>gamma %{y:.3f}<extra>" + f["family"] + "</extra>"})
    rows_order = list(dict.fromkeys(n["family"] for n in d["nc"]  # one row per family / pooled with an estimate
                                    if isinstance(n["log_nc"], float) and math.isfinite(n["log_nc"])))
    traces += _nc_forest_traces(d, rows_order)
    return {"data": traces, "layout": _running_gamma_layout(d, rows_order, xs)}


def table_running_gamma(d: dict) -> list[dict]:
    rows = [{"family": e["family"], "what": f"N_c {e['estimator']}", "log10 N": e["log_nc"],
             "gamma": None, "phase / 95% interval": f"[{e['lo']:.3g}, {e['hi']:.3g}]"} for e in d["nc"]]
    return rows + [{"family": f["family"], "what": m, "log10 N": x, "gamma": g, "phase / 95% interval": p}
                   for f in d["families"] for m, x, g, p in zip(f["model"], f["x"], f["gamma"], f["phase"])]


FIGURES = (
    FigureSpec("phase_diagram", "Phase diagram", "/analysis/coupling (+ /analysis/phases)", model_points,
               fig_phase_diagram, chart_phase_diagram, table_phase_diagram, answer=True),
    FigureSpec("running_gamma", "Running coupling and N_c", "/analysis/coupling, /analysis/nc/<estimator>",
               running_gamma, fig_running_gamma, chart_running_gamma, table_running_gamma, answer=True),
)
