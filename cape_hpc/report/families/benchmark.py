"""The other benchmark-level figures (docs/METHODS.md §2.5-§2.12): d_eff per phase, width
normalisation beside its permutation control, the frontier fit with h, the isocline, the residual
field h, the loss law and the eigen-geometry."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from cape_hpc.report.data import Results, Skip, boot_interval
from cape_hpc.report.layout import (DeffResult, EigenResult, FrontierResult, HFieldResult, IsoclineResult,
                                    LossLawResult, WidthResult)
from cape_hpc.report.registry import FigureSpec
from cape_hpc.report.style import PHASE_COLORS, error_bars, label_axes, layout, new_figure, plotly_error


def _stored(res: Results, group: str, cls: type, rows: str, what: str):
    """The result at ``group``; Skip when it is absent or its ``rows`` field is empty."""
    r = res.get(group, cls)
    if not getattr(r, rows):
        raise Skip(f"{group} has no {what}")
    return r


# --------------------------------------------------------------------------- d_eff per phase

def deff_per_phase(res: Results) -> dict[str, Any]:
    r = _stored(res, "/analysis/deff", DeffResult, "groups", "groups")
    rows = []
    for g in r.groups:
        lo, hi = boot_interval(g.bootstrap, 0.95)
        rows.append({"phase": g.group, "d_eff": g.d_eff, "lo": lo, "hi": hi, "n_models": g.n_models})
    return {"rows": rows, "matrix": r.matrix, "source": "/analysis/deff"}


def fig_deff(d: dict):
    fig, (ax,) = new_figure(width=5.5, height=4.2)
    rows = d["rows"]
    x = np.arange(len(rows))
    y = np.array([r["d_eff"] for r in rows])
    err = error_bars(y, [r["lo"] for r in rows], [r["hi"] for r in rows])
    ax.bar(x, y, color=[PHASE_COLORS.get(r["phase"], "#1f77b4") for r in rows], alpha=0.8)
    ax.errorbar(x, y, yerr=err, fmt="none", ecolor="k", capsize=4, lw=1)
    ax.set_xticks(x, [r["phase"] for r in rows])
    label_axes(ax, "phase", "d_eff (participation ratio)", "Effective dimensionality per phase (95% interval)",
               legend=None)
    return fig


def chart_deff(d: dict) -> dict:
    rows = d["rows"]
    y = [r["d_eff"] for r in rows]
    return {"data": [{"type": "bar", "x": [r["phase"] for r in rows], "y": y, "name": "d_eff",
                      "marker": {"color": [PHASE_COLORS.get(r["phase"], "#1f77b4") for r in rows]},
                      "error_y": plotly_error(y, [r["lo"] for r in rows], [r["hi"] for r in rows])}],
            "layout": layout("Effective dimensionality per phase (95% interval)", "phase", "d_eff")}


# --------------------------------------------------------------------------- width normalisation

def width_normalisation(res: Results) -> dict[str, Any]:
    r = _stored(res, "/analysis/width", WidthResult, "families", "families")
    rows = [{"family": f.family, "r_before": f.r_before, "r_after": f.r_after, "null_mean": f.null_mean,
             "null_lo": f.null_q025, "null_hi": f.null_q975, "p_value": f.p_null} for f in r.families]
    return {"rows": rows, "d_ref": r.d_ref, "source": "/analysis/width"}


def _null_centre(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, low, high) of each family's permutation null: its mean, else the interval's midpoint."""
    nm, nlo, nhi = (np.array([r[k] for r in rows], float) for k in ("null_mean", "null_lo", "null_hi"))
    return np.where(np.isfinite(nm), nm, (nlo + nhi) / 2), nlo, nhi


def fig_width(d: dict):
    rows = d["rows"]
    fig, (ax,) = new_figure(width=max(6.0, 0.9 * len(rows) + 2), height=4.5)
    x = np.arange(len(rows))
    w = 0.27
    ax.bar(x - w, [r["r_before"] for r in rows], w, label="r before", color="#1f77b4")
    ax.bar(x, [r["r_after"] for r in rows], w, label="r after (/ d_model/d_ref)", color="#ff7f0e")
    centre, nlo, nhi = _null_centre(rows)
    ok = np.isfinite(np.array([r["null_mean"] for r in rows], float)) | (np.isfinite(nlo) & np.isfinite(nhi))
    yerr = error_bars(centre, nlo, nhi)
    ax.bar(x[ok] + w, centre[ok], w, color="#bbbbbb", label="permutation control (95% of null)")
    ax.errorbar(x[ok] + w, centre[ok], yerr=yerr[:, ok], fmt="none", ecolor="k", capsize=3, lw=1)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, [r["family"] for r in rows], rotation=30, ha="right")
    label_axes(ax, "family", "Pearson r", "Width normalisation: before / after beside the permutation control",
               ylim=(-1.05, 1.05))
    return fig


def chart_width(d: dict) -> dict:
    rows = d["rows"]
    fams = [r["family"] for r in rows]
    centre, nlo, nhi = _null_centre(rows)
    return {"data": [
        {"type": "bar", "name": "r before", "x": fams, "y": [r["r_before"] for r in rows]},
        {"type": "bar", "name": "r after (width-normalised)", "x": fams, "y": [r["r_after"] for r in rows]},
        {"type": "bar", "name": "permutation control (95% of null)", "x": fams, "y": centre.tolist(),
         "marker": {"color": "#bbbbbb"}, "error_y": plotly_error(centre, nlo, nhi)}],
        "layout": layout("Width normalisation beside the permutation control", "family", "Pearson r",
                         barmode="group", yaxis={"title": {"text": "Pearson r"}, "range": [-1.05, 1.05]},
                         legend={"orientation": "h", "y": 1.08, "x": 0, "font": {"size": 11}}, wide=True)}


# --------------------------------------------------------------------------- frontier

def frontier(res: Results) -> dict[str, Any]:
    r = _stored(res, "/analysis/frontier", FrontierResult, "h", "per-model h")
    pts = {"model": [m.model for m in r.h], "lab": [m.group for m in r.h], "x": [m.b1 for m in r.h],
           "y": [m.b2 for m in r.h], "h": [m.h for m in r.h],
           "cohort": ["fit" if m.in_fit else "not in fit" for m in r.h]}
    return {"x_name": r.b1, "y_name": r.b2, "points": pts, "slope": r.slope, "intercept": r.intercept,
            "r": r.r, "cohort": r.cohort, "source": "/analysis/frontier"}


def fig_frontier(d: dict):
    p = d["points"]
    fig, (ax,) = new_figure(width=7.0, height=5.0)
    h = np.array(p["h"], float)
    lim = np.nanmax(np.abs(h)) if np.isfinite(h).any() else 1.0
    sc = ax.scatter(p["x"], p["y"], c=np.nan_to_num(h), cmap="coolwarm", vmin=-lim, vmax=lim,
                    edgecolors="k", linewidths=0.4, s=36, label="models")
    order = np.argsort(-np.abs(np.nan_to_num(h)))
    for i in order[:12]:  # the 12 largest |h|: labelling every model makes the cluster unreadable
        ax.annotate(p["model"][i], (p["x"][i], p["y"][i]), fontsize=6, xytext=(2, 2), textcoords="offset points")
    if math.isfinite(d["slope"]):
        xs = np.linspace(np.nanmin(p["x"]), np.nanmax(p["x"]), 50)
        ax.plot(xs, d["slope"] * xs + d["intercept"], "k-", lw=1.2,
                label=f"fit: {d['y_name']} = {d['slope']:.3g} {d['x_name']} + {d['intercept']:.3g}"
                + (f" (r = {d['r']:.2f})" if math.isfinite(d["r"]) else ""))
    fig.colorbar(sc, ax=ax, label="h (residual, points)")
    label_axes(ax, f"{d['x_name']} (%)", f"{d['y_name']} (%)", "Frontier models with the fitted line and h",
               loc="upper left")
    return fig


def chart_frontier(d: dict) -> dict:
    p = d["points"]
    h = np.nan_to_num(np.asarray(p["h"], float))
    lim = float(np.max(np.abs(h))) if h.size else 1.0
    traces = [{"type": "scatter", "mode": "markers", "name": "models", "x": p["x"], "y": p["y"],
               "text": [f"{m} ({lab}) h={hv:+.2f}" for m, lab, hv in zip(p["model"], p["lab"], h)],
               "marker": {"color": h.tolist(), "colorscale": "RdBu", "cmin": -lim,
                          "cmax": lim, "size": 10, "colorbar": {"title": {"text": "h"}},
                          "line": {"width": 0.5, "color": "#333"}},
               "hovertemplate": "%{text}<br>" + d["x_name"] + " %{x:.1f}<br>" + d["y_name"] + " %{y:.1f}<extra></extra>"}]
    xs = [v for v in p["x"] if isinstance(v, float) and math.isfinite(v)]
    if math.isfinite(d["slope"]) and xs:
        x0, x1 = min(xs), max(xs)
        traces.append({"type": "scatter", "mode": "lines", "name": f"fit: slope {d['slope']:.3g}",
                       "x": [x0, x1], "y": [d["slope"] * x0 + d["intercept"], d["slope"] * x1 + d["intercept"]],
                       "line": {"color": "black"}})
    return {"data": traces, "layout": layout("Frontier: fit and h per model (colour: h)", d["x_name"], d["y_name"],
                                             legend={"x": 0.01, "y": 0.99, "bgcolor": "rgba(255,255,255,0.7)"})}


def table_frontier(d: dict) -> list[dict]:
    p = d["points"]
    return [{"model": m, "lab": lab, d["x_name"]: x, d["y_name"]: y, "h": h}
            for m, lab, x, y, h in zip(p["model"], p["lab"], p["x"], p["y"], p["h"])]


# --------------------------------------------------------------------------- isocline

def isocline(res: Results) -> dict[str, Any]:
    r = res.get("/analysis/isocline", IsoclineResult)
    if not r.intervals or not math.isfinite(r.k):
        raise Skip("/analysis/isocline has no intervals or no finite k")
    b1 = [iv.b1_mid for iv in r.intervals]
    lo, hi = np.nanmin(b1), np.nanmax(b1)
    curve_x = np.linspace(max(lo - 0.05, 1e-6), min(hi + 0.05, 1.0), 60)
    return {"b1": r.b1, "b2": r.b2, "k": r.k, "rule": r.rule, "calibration": r.calibration,
            "total_agree": r.total_agree, "total_intervals": r.total_intervals,
            "rows": [{"family": iv.family, "model": iv.model, "b1_mid": iv.b1_mid, "b2_mid": iv.b2_mid,
                      "side": iv.side, "gamma": iv.gamma, "agrees": iv.agrees} for iv in r.intervals],
            "curve_x": curve_x.tolist(), "curve_y": np.sqrt(r.k * curve_x).tolist(), "source": "/analysis/isocline"}


AGREEMENT = ((True, "#2ca02c", "sign agrees"), (False, "#d62728", "sign disagrees"))


def fig_isocline(d: dict):
    fig, (ax,) = new_figure(width=6.4, height=4.8)
    ax.plot(d["curve_x"], d["curve_y"], "k-", lw=1.3, label=f"isocline sqrt(k {d['b1']}), k = {d['k']:.3g}")
    for agrees, color, lab in AGREEMENT:
        rs = [r for r in d["rows"] if r["agrees"] == agrees]
        ax.scatter([r["b1_mid"] for r in rs], [r["b2_mid"] for r in rs], c=color, s=26, edgecolors="k",
                   linewidths=0.4, label=f"{lab} ({len(rs)})")
    label_axes(ax, f"{d['b1']} interval midpoint (fraction)", f"{d['b2']} interval midpoint (fraction)",
               f"Isocline (rule {d['rule']}, calibration {d['calibration']}): "
               f"{d['total_agree']}/{d['total_intervals']} agree", title_size=10)
    return fig


def chart_isocline(d: dict) -> dict:
    traces = [{"type": "scatter", "mode": "lines", "name": f"isocline sqrt(k {d['b1']}), k = {d['k']:.3g}",
               "x": d["curve_x"], "y": d["curve_y"], "line": {"color": "black"}}]
    for agrees, color, lab in AGREEMENT:
        rs = [r for r in d["rows"] if r["agrees"] == agrees]
        traces.append({"type": "scatter", "mode": "markers", "name": f"{lab} ({len(rs)})",
                       "x": [r["b1_mid"] for r in rs], "y": [r["b2_mid"] for r in rs],
                       "text": [f"{r['family']} {r['model']}: {r['side']}, gamma {r['gamma']:+.3f}" for r in rs],
                       "marker": {"color": color, "size": 8, "line": {"width": 0.5, "color": "#333"}},
                       "hovertemplate": "%{text}<extra></extra>"})
    return {"data": traces, "layout": layout(
        f"Isocline ({d['rule']}, calibration {d['calibration']}): {d['total_agree']}/{d['total_intervals']} agree",
        f"{d['b1']} midpoint (fraction)", f"{d['b2']} midpoint (fraction)")}


# --------------------------------------------------------------------------- residual field h

def hfield(res: Results) -> dict[str, Any]:
    r = _stored(res, "/analysis/hfield", HFieldResult, "groups", "groups")
    return {"b1": r.b1, "b2": r.b2, "group_by": r.group_by, "beta1": r.beta1, "beta0": r.beta0,
            "units": r.units,
            "rows": [{"group": g.group, "count": g.count, "mean_h": g.mean_h, "std_h": g.std_h} for g in r.groups],
            "source": "/analysis/hfield"}


def fig_hfield(d: dict):
    rows = d["rows"]
    fig, (ax,) = new_figure(width=max(5.5, 0.45 * len(rows) + 2), height=4.4)
    x = np.arange(len(rows))
    y = np.array([r["mean_h"] for r in rows])
    ax.bar(x, y, yerr=np.nan_to_num([r["std_h"] for r in rows]), capsize=3,
           color=["#2ca02c" if v > 0 else "#d62728" for v in y])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, [r["group"] for r in rows], rotation=45, ha="right", fontsize=8)
    label_axes(ax, d["group_by"], "mean h (points; +- std)",
               f"Residual field h against {d['b2']} = {d['beta1']:.3g} {d['b1']} + {d['beta0']:.3g}",
               legend=None, title_size=10)
    return fig


def chart_hfield(d: dict) -> dict:
    rows = d["rows"]
    y = [r["mean_h"] for r in rows]
    return {"data": [{"type": "bar", "x": [r["group"] for r in rows], "y": y, "name": "mean h",
                      "marker": {"color": ["#2ca02c" if (v or 0) > 0 else "#d62728" for v in y]},
                      "error_y": {"type": "data", "array": [r["std_h"] if isinstance(r["std_h"], float)
                                                            and math.isfinite(r["std_h"]) else 0 for r in rows]},
                      "text": [f"n = {r['count']}" for r in rows]}],
            "layout": layout(f"Residual field h vs {d['b2']} = {d['beta1']:.3g} {d['b1']} + {d['beta0']:.3g}",
                             d["group_by"], "mean h (points, +- std)")}


# --------------------------------------------------------------------------- loss law

def loss_law(res: Results) -> dict[str, Any]:
    r = _stored(res, "/analysis/loss", LossLawResult, "params", "models")
    return {"params": list(r.params), "val_loss": list(r.val_loss), "fitted": list(r.fitted),
            "models": list(r.models), "E": r.E, "A": r.A, "alpha": r.alpha, "alpha_se": r.alpha_se, "r2": r.r2,
            "cv": r.cv, "source": "/analysis/loss"}


def _loss_label(d: dict) -> str:
    return f"L = {d['E']:.3g} + {d['A']:.3g} N^-{d['alpha']:.3g}"


def fig_loss(d: dict):
    fig, (ax,) = new_figure(width=6.0, height=4.4)
    ax.plot(d["params"], d["val_loss"], "o", label="validation loss")
    if len(d["fitted"]) == len(d["params"]):
        order = np.argsort(d["params"])
        ax.plot(np.asarray(d["params"])[order], np.asarray(d["fitted"])[order], "-",
                label=f"{_loss_label(d)}  (R^2 {d['r2']:.3f})")
    ax.set_xscale("log")
    label_axes(ax, "N (parameters)", "validation loss", "Loss law", title_size=10)
    return fig


def chart_loss(d: dict) -> dict:
    order = np.argsort(d["params"])
    traces = [{"type": "scatter", "mode": "markers", "name": "validation loss", "x": d["params"], "y": d["val_loss"],
               "text": d["models"]}]
    if len(d["fitted"]) == len(d["params"]):
        traces.append({"type": "scatter", "mode": "lines", "x": np.asarray(d["params"])[order].tolist(),
                       "y": np.asarray(d["fitted"])[order].tolist(),
                       "name": f"{_loss_label(d)} (R^2 {d['r2']:.3f})"})
    lay = layout("Loss law", "N (parameters)", "validation loss")
    lay["xaxis"]["type"] = "log"
    return {"data": traces, "layout": lay}


def table_loss(d: dict) -> list[dict]:
    n = len(d["params"])
    return [{"model": m, "N": p, "val_loss": v, "fitted": f} for m, p, v, f in
            zip(d["models"] or [""] * n, d["params"], d["val_loss"], d["fitted"] or [None] * n)]


# --------------------------------------------------------------------------- eigen-geometry

def eigen(res: Results) -> dict[str, Any]:
    r = _stored(res, "/analysis/eigen", EigenResult, "windows", "windows")
    return {"family": r.family, "mode": r.mode, "matrix": r.matrix,
            "rows": [{"last_model": w.last_model, "log10_n": w.log10_n, "lambda1": w.lambda1, "lambda2": w.lambda2,
                      "e2_angle_deg": w.e2_angle_deg, "n_models": w.n_models} for w in r.windows],
            "power_exponent": r.power_exponent, "power_r2": r.power_r2, "source": "/analysis/eigen"}


def fig_eigen(d: dict):
    fig, (ax,) = new_figure(width=6.4, height=4.4)
    x = [r["log10_n"] for r in d["rows"]]
    ax.plot(x, [r["lambda1"] for r in d["rows"]], "o-", label="lambda1")
    ax.plot(x, [r["lambda2"] for r in d["rows"]], "s-", label=f"lambda2 (~N^{d['power_exponent']:.2g})")
    ax2 = ax.twinx()
    ax2.plot(x, [r["e2_angle_deg"] for r in d["rows"]], ":", color="0.4", label="e2 angle")
    ax2.set_ylabel("e2 rotation (degrees)")
    label_axes(ax, "log10 N (largest model of the window)", "eigenvalue",
               f"Eigen-geometry: {d['family']} ({d['mode']} windows, {d['matrix']})", title_size=10,
               loc="upper left")
    return fig


def chart_eigen(d: dict) -> dict:
    x = [r["log10_n"] for r in d["rows"]]
    traces = [{"type": "scatter", "mode": "lines+markers", "name": "lambda1", "x": x, "y": [r["lambda1"] for r in d["rows"]]},
              {"type": "scatter", "mode": "lines+markers", "name": "lambda2", "x": x, "y": [r["lambda2"] for r in d["rows"]]},
              {"type": "scatter", "mode": "lines", "name": "e2 angle (deg, right)", "x": x,
               "y": [r["e2_angle_deg"] for r in d["rows"]], "yaxis": "y2", "line": {"dash": "dot", "color": "#666"}}]
    lay = layout(f"Eigen-geometry: {d['family']} ({d['mode']} windows)", "log10 N", "eigenvalue",
                 yaxis2={"overlaying": "y", "side": "right", "title": {"text": "degrees"}, "showgrid": False})
    return {"data": traces, "layout": lay}


FIGURES = (
    FigureSpec("deff", "d_eff per phase", "/analysis/deff", deff_per_phase, fig_deff, chart_deff),
    FigureSpec("width", "Width normalisation and its permutation control", "/analysis/width", width_normalisation,
               fig_width, chart_width),
    FigureSpec("frontier", "Frontier", "/analysis/frontier", frontier, fig_frontier, chart_frontier, table_frontier),
    FigureSpec("isocline", "Isocline", "/analysis/isocline", isocline, fig_isocline, chart_isocline),
    FigureSpec("hfield", "Residual field h per family", "/analysis/hfield", hfield, fig_hfield, chart_hfield),
    FigureSpec("loss", "Loss law", "/analysis/loss", loss_law, fig_loss, chart_loss, table_loss),
    FigureSpec("eigen", "Eigen-geometry", "/analysis/eigen", eigen, fig_eigen, chart_eigen),
)
