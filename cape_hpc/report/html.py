"""One self-contained HTML report from a results file.

Everything is inlined: the CSS, plotly.js (the copy the ``plotly`` pip package ships in
``plotly/package_data/plotly.min.js``; no CDN), the chart specs and tables as JSON, and the
report's own script (``assets/report.js``: renders the charts and the diagnose panel).  The page
makes no network request.

Sections: overview (file, version, commit), one card per chart with the table behind it (skipped
charts listed with the missing group), the reproduction-audit table, every stored group's scalars
and tables, the provenance of every group, and the diagnose panel (``assets/report.js`` mirrors
``cape_hpc.analysis.diagnose``'s pure function on the ``DiagnoseModel`` stored in the file).
"""
from __future__ import annotations

import dataclasses
import html
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from cape_hpc.report import extract as ex
from cape_hpc.report.data import Results, Skip, jsonable
from cape_hpc.report.layout import AuditResult, DiagnoseModel, InputTable

ASSETS = Path(__file__).resolve().parent / "assets"


def plotly_js() -> str:
    """The minified plotly.js bundled with the ``plotly`` pip package (read from disk, offline)."""
    try:
        import plotly
    except ImportError as exc:  # pragma: no cover - plotly is an install requirement
        from cape_hpc.errors import CapeError

        raise CapeError("cape report needs the 'plotly' package (pip install plotly)") from exc
    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    return path.read_text(encoding="utf-8")


def _script_safe(text: str) -> str:
    """Text that can sit inside <script>...</script> without ending it early."""
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _json(obj: Any) -> str:
    return _script_safe(json.dumps(jsonable(obj), allow_nan=False, separators=(",", ":")))


# --------------------------------------------------------------------------- chart specs (plotly)

def _layout(title: str, xlab: str, ylab: str, **kw) -> dict:
    lay = {"title": {"text": title, "font": {"size": 15}}, "xaxis": {"title": {"text": xlab}, "zeroline": False},
           "yaxis": {"title": {"text": ylab}}, "margin": {"l": 60, "r": 20, "t": 50, "b": 55},
           "legend": {"font": {"size": 10}}, "hovermode": "closest", "template": None,
           "paper_bgcolor": "white", "plot_bgcolor": "#fafafa"}
    lay.update(kw)
    return lay


def _err(y, lo, hi) -> dict:
    y, lo, hi = (np.asarray(v, float) for v in (y, lo, hi))
    up = np.clip(np.nan_to_num(hi - y, nan=0.0), 0.0, None)
    down = np.clip(np.nan_to_num(y - lo, nan=0.0), 0.0, None)
    return {"type": "data", "symmetric": False, "array": up.tolist(), "arrayminus": down.tolist(), "visible": True}


SYMBOLS = ["circle", "square", "diamond", "triangle-up", "triangle-down", "cross", "x", "pentagon", "hexagon",
           "star", "triangle-left", "triangle-right", "hourglass", "bowtie", "circle-open", "square-open",
           "diamond-open", "star-open", "hexagon-open", "pentagon-open"]


def chart_phase_diagram(d: dict) -> dict:
    traces = []
    for i, fam in enumerate(d["families"]):
        traces.append({"type": "scatter", "mode": "lines+markers", "name": fam["family"],
                       "x": fam["b1"], "y": fam["b2"], "text": [f"{m} ({p or 'no phase'})"
                                                                for m, p in zip(fam["model"], fam["phase"])],
                       "line": {"color": "#aaaaaa", "width": 1},
                       "marker": {"color": [ex.PHASE_COLORS.get(p, "#1f77b4") for p in fam["phase"]],
                                  "size": 9, "symbol": SYMBOLS[i % len(SYMBOLS)], "line": {"width": 0.5, "color": "#333"}},
                       "hovertemplate": "%{text}<br>" + d["b1"] + " %{x:.2f}<br>" + d["b2"] + " %{y:.2f}<extra>"
                                        + fam["family"] + "</extra>"})
    for p in ex.PHASE_ORDER:  # legend entries for the phase colours
        traces.append({"type": "scatter", "mode": "markers", "x": [None], "y": [None], "name": f"phase: {p}",
                       "marker": {"color": ex.PHASE_COLORS[p], "size": 9}, "legendgroup": "phases"})
    return {"data": traces, "layout": _layout(f"Phase diagram: {d['b1']} vs {d['b2']} per family (colour: phase)",
                                              d["b1"], d["b2"], height=560, wide=True)}


PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
           "#756bb1", "#636363"]


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
    ests = list(dict.fromkeys(n["estimator"] for n in d["nc"]))
    rows_order = list(dict.fromkeys(n["family"] for n in d["nc"]  # one row per family / pooled with an estimate
                                    if isinstance(n["log_nc"], float) and math.isfinite(n["log_nc"])))
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
                       "error_x": {**_err(y, [r["lo"] for r in rows], [r["hi"] for r in rows]),
                                   "color": PALETTE[(j + 3) % len(PALETTE)], "thickness": 1.5, "width": 3},
                       "text": [f"{r['family']} {est}: log10 N_c = {r['log_nc']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]"
                                for r in rows], "hovertemplate": "%{text}<extra></extra>"})
    shapes = [{"type": "rect", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": d["tax_below"],
               "y1": d["bonus_above"], "fillcolor": "#dddddd", "opacity": 0.5, "line": {"width": 0}, "layer": "below"}]
    finite = np.array([g for f in d["families"] for g in f["gamma"] if isinstance(g, float) and math.isfinite(g)])
    forest_px, top_px = max(110, 30 * len(rows_order)), 380
    split = forest_px / (forest_px + top_px)
    lay = _layout("Running coupling gamma(N) and N_c estimates (95% intervals)", "log10 N", "", shapes=shapes,
                  height=int(forest_px + top_px + 150))
    if finite.size:
        lo, hi = np.quantile(finite, [0.02, 0.98])
        pad = 0.15 * (hi - lo + 1e-9)
        lay["yaxis"] = {"title": {"text": f"gamma = d{d['b2']}/d{d['b1']}"}, "domain": [split + 0.08, 1.0],
                        "range": [float(min(lo - pad, -0.5)), float(max(hi + pad, 0.5))]}
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
    return {"data": traces, "layout": lay}


def chart_deff(d: dict) -> dict:
    rows = d["rows"]
    y = [r["d_eff"] for r in rows]
    return {"data": [{"type": "bar", "x": [r["phase"] for r in rows], "y": y, "name": "d_eff",
                      "marker": {"color": [ex.PHASE_COLORS.get(r["phase"], "#1f77b4") for r in rows]},
                      "error_y": _err(y, [r["lo"] for r in rows], [r["hi"] for r in rows])}],
            "layout": _layout("Effective dimensionality per phase (95% interval)", "phase", "d_eff")}


def chart_width(d: dict) -> dict:
    rows = d["rows"]
    fams = [r["family"] for r in rows]
    nm = np.array([r["null_mean"] for r in rows], float)
    nlo = np.array([r["null_lo"] for r in rows], float)
    nhi = np.array([r["null_hi"] for r in rows], float)
    centre = np.where(np.isfinite(nm), nm, (nlo + nhi) / 2)
    return {"data": [
        {"type": "bar", "name": "r before", "x": fams, "y": [r["r_before"] for r in rows]},
        {"type": "bar", "name": "r after (width-normalised)", "x": fams, "y": [r["r_after"] for r in rows]},
        {"type": "bar", "name": "permutation control (95% of null)", "x": fams, "y": centre.tolist(),
         "marker": {"color": "#bbbbbb"}, "error_y": _err(centre, nlo, nhi)}],
        "layout": _layout("Width normalisation beside the permutation control", "family", "Pearson r",
                          barmode="group", yaxis={"title": {"text": "Pearson r"}, "range": [-1.05, 1.05]},
                          legend={"orientation": "h", "y": 1.08, "x": 0, "font": {"size": 11}}, wide=True)}


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
    return {"data": traces, "layout": _layout("Frontier: fit and h per model (colour: h)", d["x_name"], d["y_name"],
                                              legend={"x": 0.01, "y": 0.99, "bgcolor": "rgba(255,255,255,0.7)"})}


def chart_dynamics(d: dict) -> list[tuple[str, dict]]:
    out = []
    for tr in d["trajectories"]:
        A, P = np.asarray(tr["actual"], float), np.asarray(tr["predicted"], float)
        traces = []
        for j, b in enumerate(tr["benchmarks"]):
            c = PALETTE[j % len(PALETTE)]
            traces.append({"type": "scatter", "mode": "markers", "name": f"{b} actual", "x": tr["x"],
                           "y": A[:, j].tolist(), "legendgroup": b, "marker": {"color": c, "size": 8}})
            traces.append({"type": "scatter", "mode": "lines", "name": f"{b} ODE", "x": tr["x"],
                           "y": P[:, j].tolist(), "legendgroup": b, "line": {"color": c}})
            for deg, Bp in (tr.get("baselines") or {}).items():  # click the legend to show a baseline
                traces.append({"type": "scatter", "mode": "lines", "name": f"{b} {deg}", "x": tr["x"],
                               "y": np.asarray(Bp, float)[:, j].tolist(), "legendgroup": b, "visible": "legendonly",
                               "line": {"dash": "dot", "color": c}})
        out.append((f"dynamics: {tr['label']}", {"data": traces, "layout": _layout(
            f"Holdout prediction: {tr['label']}", "log10 N", "score (%)")}))
    if d["errors"]:
        labels = [e["label"] for e in d["errors"]]
        out.append(("dynamics: holdout errors", {"data": [{
            "type": "bar", "orientation": "h", "y": labels, "x": [e["error"] for e in d["errors"]],
            "marker": {"color": ["#999999" if ("poly" in lab or "baseline" in lab) else "#1f77b4" for lab in labels]}}],
            "layout": _layout("Holdout error: ODE vs polynomial baselines", "relative error", "",
                              margin={"l": 160, "r": 20, "t": 50, "b": 55})}))
    return out


def chart_internals(m: dict) -> list[tuple[str, dict]]:
    L = list(range(len(m["layer_coupling"])))
    traces = [{"type": "scatter", "mode": "lines+markers", "name": "cos(mean R, mean T)", "x": L,
               "y": m["layer_coupling"]}]
    if len(m["layer_pairwise_mean"]) == len(L):
        traces.append({"type": "scatter", "mode": "lines", "name": "mean pairwise cosine", "x": L,
                       "y": m["layer_pairwise_mean"], "line": {"dash": "dash"}})
    if len(m["layer_competing_fraction"]) == len(L):
        traces.append({"type": "scatter", "mode": "lines", "name": "fraction < -0.5", "x": L,
                       "y": m["layer_competing_fraction"], "line": {"dash": "dot"}})
    lay = _layout(f"{m['model']}: per-layer coupling", "layer", "coupling")
    lay["xaxis"]["dtick"] = 1 if len(L) <= 40 else None
    out = [(f"internals: {m['model']} layers", {"data": traces, "layout": lay})]
    if m["head_coupling"] is not None:
        H = np.asarray(m["head_coupling"], float)
        lim = float(np.nanmax(np.abs(H))) if np.isfinite(H).any() else 1.0
        out.append((f"internals: {m['model']} heads", {"data": [{
            "type": "heatmap", "z": H.T.tolist(), "x": L, "y": list(range(H.shape[1])), "colorscale": "RdBu",
            "zmin": -lim, "zmax": lim, "colorbar": {"title": {"text": "cos"}},
            "hovertemplate": "layer %{x}, head %{y}: %{z:.3f}<extra></extra>"}],
            "layout": _layout(f"{m['model']}: per-head coupling", "layer", "head",
                              xaxis={"title": {"text": "layer"}, "dtick": 1 if len(L) <= 40 else None},
                              yaxis={"title": {"text": "head"}, "dtick": 1 if H.shape[1] <= 40 else None})}))
    return out


def chart_steering(d: dict) -> dict:
    traces = []
    for model in dict.fromkeys(r["model"] for r in d["rows"]):
        rs = [r for r in d["rows"] if r["model"] == model]
        y = [r["rate"] for r in rs]
        traces.append({"type": "scatter", "mode": "lines+markers", "name": model, "x": [r["alpha"] for r in rs],
                       "y": y, "error_y": _err(y, [r["lo"] for r in rs], [r["hi"] for r in rs])})
    return {"data": traces, "layout": _layout("Steering: intervention rate (Wilson 95% interval)", "alpha",
                                              "intervention rate", yaxis={"title": {"text": "intervention rate"},
                                                                          "range": [-0.02, 1.02]})}


def chart_steering_dose(d: dict) -> dict:
    traces = []
    for model, layer in dict.fromkeys((r["model"], r["layer"]) for r in d["rows"]):
        rs = sorted((r for r in d["rows"] if (r["model"], r["layer"]) == (model, layer)), key=lambda r: r["alpha"])
        for what, dash in (("correction", "solid"), ("damage", "dash")):
            y = [r[what] for r in rs]
            traces.append({"type": "scatter", "mode": "lines+markers", "name": f"{model} L{layer}: {what}",
                           "x": [r["alpha"] for r in rs], "y": y, "line": {"dash": dash},
                           "error_y": _err(y, [r[f"{what}_lo"] for r in rs], [r[f"{what}_hi"] for r in rs])})
    for c in d["chosen"]:
        traces.append({"type": "scatter", "mode": "markers", "name": f"chosen: {c['model']} L{c['layer']}",
                       "x": [c["alpha"]], "y": [c["correction"]],
                       "marker": {"size": 16, "symbol": "circle-open", "color": "black"}})
    return {"data": traces, "layout": _layout(f"Steering dose-response: held-out correction and damage "
                                              f"({d['level']:.0%} Wilson)", "alpha", "rate",
                                              yaxis={"title": {"text": "rate"}, "range": [-0.02, 1.02]})}


def chart_predict(d: dict) -> dict:
    traces = []
    for i, p in enumerate(d["predictions"]):
        c = PALETTE[i % len(PALETTE)]
        traces.append({"type": "bar", "name": f"start: {p['label']}", "x": p["benchmarks"], "y": p["start"],
                       "marker": {"color": "#cccccc"}, "legendgroup": p["label"]})
        traces.append({"type": "bar", "name": f"ODE: {p['label']}", "x": p["benchmarks"], "y": p["ode"],
                       "marker": {"color": c}, "error_y": _err(p["ode"], p["lo"], p["hi"]), "legendgroup": p["label"]})
        for name, vals in sorted(p["baselines"].items()):
            traces.append({"type": "scatter", "mode": "markers", "name": f"{name}: {p['label']}", "x": p["benchmarks"],
                           "y": vals, "marker": {"symbol": "line-ew-open", "size": 16, "line": {"width": 2}},
                           "legendgroup": p["label"], "visible": "legendonly" if i else True})
    return {"data": traces, "layout": _layout("Predicted scores at a new size (ODE with 95% band, baselines)",
                                              "benchmark", "score (%)", barmode="group")}


def chart_isocline(d: dict) -> dict:
    traces = [{"type": "scatter", "mode": "lines", "name": f"isocline sqrt(k {d['b1']}), k = {d['k']:.3g}",
               "x": d["curve_x"], "y": d["curve_y"], "line": {"color": "black"}}]
    for agrees, color, lab in ((True, "#2ca02c", "sign agrees"), (False, "#d62728", "sign disagrees")):
        rs = [r for r in d["rows"] if r["agrees"] == agrees]
        traces.append({"type": "scatter", "mode": "markers", "name": f"{lab} ({len(rs)})",
                       "x": [r["b1_mid"] for r in rs], "y": [r["b2_mid"] for r in rs],
                       "text": [f"{r['family']} {r['model']}: {r['side']}, gamma {r['gamma']:+.3f}" for r in rs],
                       "marker": {"color": color, "size": 8, "line": {"width": 0.5, "color": "#333"}},
                       "hovertemplate": "%{text}<extra></extra>"})
    return {"data": traces, "layout": _layout(
        f"Isocline ({d['rule']}, calibration {d['calibration']}): {d['total_agree']}/{d['total_intervals']} agree",
        f"{d['b1']} midpoint (fraction)", f"{d['b2']} midpoint (fraction)")}


def chart_hfield(d: dict) -> dict:
    rows = d["rows"]
    y = [r["mean_h"] for r in rows]
    return {"data": [{"type": "bar", "x": [r["group"] for r in rows], "y": y, "name": "mean h",
                      "marker": {"color": ["#2ca02c" if (v or 0) > 0 else "#d62728" for v in y]},
                      "error_y": {"type": "data", "array": [r["std_h"] if isinstance(r["std_h"], float)
                                                            and math.isfinite(r["std_h"]) else 0 for r in rows]},
                      "text": [f"n = {r['count']}" for r in rows]}],
            "layout": _layout(f"Residual field h vs {d['b2']} = {d['beta1']:.3g} {d['b1']} + {d['beta0']:.3g}",
                              d["group_by"], "mean h (points, +- std)")}


def chart_loss(d: dict) -> dict:
    order = np.argsort(d["params"])
    traces = [{"type": "scatter", "mode": "markers", "name": "validation loss", "x": d["params"], "y": d["val_loss"],
               "text": d["models"]}]
    if len(d["fitted"]) == len(d["params"]):
        traces.append({"type": "scatter", "mode": "lines", "x": np.asarray(d["params"])[order].tolist(),
                       "y": np.asarray(d["fitted"])[order].tolist(),
                       "name": f"L = {d['E']:.3g} + {d['A']:.3g} N^-{d['alpha']:.3g} (R^2 {d['r2']:.3f})"})
    lay = _layout("Loss law", "N (parameters)", "validation loss")
    lay["xaxis"]["type"] = "log"
    return {"data": traces, "layout": lay}


def chart_eigen(d: dict) -> dict:
    x = [r["log10_n"] for r in d["rows"]]
    traces = [{"type": "scatter", "mode": "lines+markers", "name": "lambda1", "x": x, "y": [r["lambda1"] for r in d["rows"]]},
              {"type": "scatter", "mode": "lines+markers", "name": "lambda2", "x": x, "y": [r["lambda2"] for r in d["rows"]]},
              {"type": "scatter", "mode": "lines", "name": "e2 angle (deg, right)", "x": x,
               "y": [r["e2_angle_deg"] for r in d["rows"]], "yaxis": "y2", "line": {"dash": "dot", "color": "#666"}}]
    lay = _layout(f"Eigen-geometry: {d['family']} ({d['mode']} windows)", "log10 N", "eigenvalue",
                  yaxis2={"overlaying": "y", "side": "right", "title": {"text": "degrees"}, "showgrid": False})
    return {"data": traces, "layout": lay}


def _table_of(name: str, d: dict) -> dict:
    """The table behind a chart: {columns, rows}."""
    if name == "phase_diagram":
        rows = [{"family": f["family"], "model": m, "N": n, d["b1"]: b1, d["b2"]: b2, "phase": p}
                for f in d["families"] for m, n, b1, b2, p in zip(f["model"], f["N"], f["b1"], f["b2"], f["phase"])]
    elif name == "running_gamma":
        rows = [{"family": e["family"], "what": f"N_c {e['estimator']}", "log10 N": e["log_nc"],
                 "gamma": None, "phase / 95% interval": f"[{e['lo']:.3g}, {e['hi']:.3g}]"} for e in d["nc"]]
        rows += [{"family": f["family"], "what": m, "log10 N": x, "gamma": g, "phase / 95% interval": p}
                 for f in d["families"] for m, x, g, p in zip(f["model"], f["x"], f["gamma"], f["phase"])]
    elif name == "frontier":
        p = d["points"]
        rows = [{"model": m, "lab": lab, d["x_name"]: x, d["y_name"]: y, "h": h}
                for m, lab, x, y, h in zip(p["model"], p["lab"], p["x"], p["y"], p["h"])]
    elif name == "dynamics":
        rows = [{"trajectory": t["label"], "log10 N": x, **{f"{b} actual": a[j] for j, b in enumerate(t["benchmarks"])},
                 **{f"{b} ODE": pr[j] for j, b in enumerate(t["benchmarks"])}}
                for t in d["trajectories"] for x, a, pr in zip(t["x"], t["actual"], t["predicted"])]
        rows += [{"trajectory": e["label"], "log10 N": None, "holdout error": e["error"]} for e in d["errors"]]
    elif name == "internals":
        rows = []
        for m in d["models"]:
            for i, c in enumerate(m["layer_coupling"]):
                row = {"model": m["model"], "layer": i, "layer_coupling": c}
                if len(m["layer_competing_fraction"]) > i:
                    row["competing_fraction"] = m["layer_competing_fraction"][i]
                if m["head_coupling"] is not None:
                    hc = np.asarray(m["head_coupling"][i], float)
                    row["heads: mean"] = float(np.nanmean(hc)) if hc.size else None
                    row["heads: min"] = float(np.nanmin(hc)) if hc.size else None
                rows.append(row)
    elif name == "loss":
        rows = [{"model": m, "N": n, "val_loss": v, "fitted": f} for m, n, v, f in
                zip(d["models"] or [""] * len(d["params"]), d["params"], d["val_loss"], d["fitted"] or [None] * len(d["params"]))]
    elif name == "predict":
        rows = [{"prediction": p["label"], "benchmark": b, "start": s0, "ODE": o, "95% lo": lo, "95% hi": hi,
                 **{k: v[j] for k, v in sorted(p["baselines"].items())}}
                for p in d["predictions"] for j, (b, s0, o, lo, hi) in
                enumerate(zip(p["benchmarks"], p["start"], p["ode"], p["lo"], p["hi"]))]
    elif name == "heads":
        H = d["head_coupling"] or []
        rows = [{"model": d["model"], "layer": i, **{f"head {j}": v for j, v in enumerate(row)}} for i, row in enumerate(H)]
    elif name == "dynamics_errors":
        rows = [{"model": e["label"], "holdout error": e["error"], "group": e["path"]} for e in d["errors"]]
    else:
        rows = d.get("rows", [])
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return {"columns": cols, "rows": [[r.get(c) for c in cols] for r in rows]}


def build_charts(res: Results) -> tuple[list[dict], list[dict]]:
    """(charts [{id, title, source, spec, table, note}], skipped [{chart, note}])."""
    charts, skipped = [], []

    def add(title, spec, name, d):
        charts.append({"id": f"chart{len(charts)}", "title": title, "source": d.get("source", ""),
                       "spec": spec, "table": _table_of(name, d), "note": d.get("note", "")})

    simple = {"phase_diagram": ("Phase diagram", chart_phase_diagram),
              "running_gamma": ("Running coupling and N_c", chart_running_gamma),
              "deff": ("d_eff per phase", chart_deff),
              "width": ("Width normalisation and its permutation control", chart_width),
              "frontier": ("Frontier", chart_frontier),
              "predict": ("Prediction at a new size", chart_predict),
              "isocline": ("Isocline", chart_isocline),
              "hfield": ("Residual field h per family", chart_hfield),
              "loss": ("Loss law", chart_loss),
              "eigen": ("Eigen-geometry", chart_eigen)}
    for name, (title, fn) in simple.items():
        try:
            d = ex.EXTRACTORS[name](res)
        except Skip as exc:
            skipped.append({"chart": title, "note": str(exc)})
            continue
        add(title, fn(d), name, d)
    try:
        d = ex.dynamics(res)
        specs = chart_dynamics(d)
        for i, (title, spec) in enumerate(specs):
            is_err = title.endswith("holdout errors")
            add(title, spec, "dynamics_errors" if is_err else "dynamics", d)
    except Skip as exc:
        skipped.append({"chart": "Dynamics (ODE fits, holdout vs baselines)", "note": str(exc)})
    try:
        d = ex.internals(res)
        for m in d["models"]:
            for i, (title, spec) in enumerate(chart_internals(m)):
                one = {"models": [m], "source": f"/internals/{m['model']}"}
                add(title, spec, "internals" if i == 0 else "heads", one if i == 0 else {**m, "source": one["source"]})
    except Skip as exc:
        skipped.append({"chart": "Internals (per-layer and per-head coupling)", "note": str(exc)})
    try:
        d = ex.steering(res)
        add("Steering intervention rate", chart_steering(d), "steering", d)
    except Skip as exc:
        skipped.append({"chart": "Steering intervention rate", "note": str(exc)})
    try:
        d = ex.steering_dose(res)
        add("Steering dose-response (held-out correction and damage)", chart_steering_dose(d), "steering_dose", d)
    except Skip as exc:
        skipped.append({"chart": "Steering dose-response (held-out correction and damage)", "note": str(exc)})
    from cape_hpc.report.crossmodel_figures import build_charts as crossmodel_charts

    cm, cm_skipped = crossmodel_charts(res)
    for title, spec, d in cm:
        add(title, spec, "crossmodel", d)
    skipped += cm_skipped
    return charts, skipped


# --------------------------------------------------------------------------- tables of every group

def _cell(v: Any) -> Any:
    v = jsonable(v)
    if isinstance(v, float):
        return None if not math.isfinite(v) else v
    if isinstance(v, (list, dict)):
        s = json.dumps(v, default=str)
        return s if len(s) <= 120 else s[:117] + "..."
    return v


def _is_row_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(dataclasses.is_dataclass(r) for r in v)


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """The fields of a dataclass as cells; a nested dataclass (a ConfidenceInterval, a bootstrap
    summary) becomes ``field.sub`` cells."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v) and not isinstance(v, type) and not prefix:
            out.update(_flat(v, f"{f.name}."))
        else:
            out[prefix + f.name] = _cell(v)
    return out


def group_tables(res: Results) -> list[dict]:
    """Every stored result: its scalar fields (nested values flattened) and its tables (lists of rows)."""
    out = []
    for path, obj in res.stored.items():
        if isinstance(obj, InputTable):
            continue
        scalars, tables = {}, []
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if f.name == "provenance":
                continue
            if _is_row_list(v):
                rows = [_flat(r) for r in v]
                cols = list(rows[0])
                tables.append({"name": f.name, "columns": cols, "rows": [[r.get(c) for c in cols] for r in rows]})
            elif dataclasses.is_dataclass(v) and not isinstance(v, type):
                scalars.update({k: c for k, c in _flat(v, f"{f.name}.").items()})
            elif isinstance(v, np.ndarray) and v.size > 200:
                scalars[f.name] = f"array {v.shape}"
            else:
                scalars[f.name] = _cell(v)
        out.append({"group": path, "scalars": scalars, "tables": tables})
    for path, name in res.unknown.items():
        out.append({"group": path, "scalars": {"note": f"a {name}, a result class the report does not read"},
                    "tables": []})
    return out


AUDIT_COLUMNS = (("id", "claim"), ("section", "section"), ("gist", "gist"), ("paper", "paper"),
                 ("method", "stated method"), ("value", "computed (stated method)"), ("verdict", "verdict"),
                 ("alternative", "reproducing alternative"))


def _alts(claim: Any) -> str:
    """'name: value (MATCH|no|?)' for each alternative tried."""
    out = []
    for a in claim.alternatives_tried:
        mark = "MATCH" if a.matches else ("?" if a.undecided else "no")
        out.append(f"{a.name}: {a.value} ({mark})")
    return "; ".join(out)


def audit_table(res: Results) -> dict | None:
    """The reproduction audit (``/reproduce``, an AuditResult): one row per claim of the paper."""
    a = res.optional("/reproduce", AuditResult)
    if a is None:
        return None
    cols = [label for _, label in AUDIT_COLUMNS] + ["alternatives tried", "why (when not computed)"]
    rows = [[_cell(getattr(c, key)) for key, _ in AUDIT_COLUMNS] + [_alts(c), _cell(c.reason)] for c in a.claims]
    return {"source": "/reproduce", "columns": cols, "rows": rows,
            "counts": {k: _cell(v) for k, v in a.counts.items()}, "registry": _cell(a.registry)}


# --------------------------------------------------------------------------- diagnose model

def diagnose_model(res: Results) -> tuple[dict | None, str]:
    """The stored DiagnoseModel (coefficients for the in-page diagnose) as JSON, and its path."""
    m = res.optional("/analysis/diagnose_model", DiagnoseModel)
    if m is None:
        return None, ""
    return jsonable(m), "/analysis/diagnose_model"


# --------------------------------------------------------------------------- page

def build_html(res: Results, title: str | None = None) -> tuple[str, dict]:
    charts, skipped = build_charts(res)
    dmodel, dpath = diagnose_model(res)
    if dmodel is None:
        skipped.append({"chart": "Diagnose panel", "note": f"no /analysis/diagnose_model group (a DiagnoseModel) in {res.path}"})
    payload = {
        "file": os.path.basename(res.path),
        "root": {k: _cell(v) for k, v in res.root_attrs.items()},
        "charts": [{k: c[k] for k in ("id", "title", "source", "spec", "table", "note")} for c in charts],
        "skipped": skipped,
        "audit": audit_table(res),
        "groups": group_tables(res),
        "provenance": [{k: _cell(v) for k, v in r.items()} for r in res.provenance_rows()],
        "diagnose": {"model": dmodel, "source": dpath} if dmodel is not None else None,
    }
    title = title or f"CAPE report: {payload['file']}"
    css = (ASSETS / "report.css").read_text(encoding="utf-8")
    js = (ASSETS / "report.js").read_text(encoding="utf-8")
    djs = (ASSETS / "diagnose.js").read_text(encoding="utf-8")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data: blob:; font-src data:; connect-src 'none'">
<title>{html.escape(title)}</title>
<style>{css}</style>
<script>{_script_safe(plotly_js())}</script>
</head>
<body>
<header><h1>{html.escape(title)}</h1><div id="meta"></div></header>
<nav id="toc"></nav>
<main>
<section id="diagnose"><h2>Diagnose a model</h2><div id="diagnose-panel"></div></section>
<section id="charts"><h2>Charts</h2><div id="skipped"></div><div id="chart-list"></div></section>
<section id="audit"><h2>Reproduction audit</h2><div id="audit-table"></div></section>
<section id="provenance"><h2>Provenance of every group</h2><div id="provenance-table"></div></section>
<section id="groups"><h2>Stored results (scalars and tables)</h2><div id="group-list"></div></section>
</main>
<footer>Self-contained report written by cape_hpc; charts by plotly.js (MIT), inlined.</footer>
<script id="cape-data" type="application/json">{_json(payload)}</script>
<script>{_script_safe(js)}</script>
<script>{_script_safe(djs)}</script>
<script>window.capeInitDiagnose();</script>
</body>
</html>
"""
    info = {"charts": [c["title"] for c in charts], "skipped": skipped,
            "diagnose": dpath or None, "n_groups": len(payload["groups"])}
    return page, info


def write_report(results_path: str | os.PathLike, out: str | os.PathLike, title: str | None = None, *,
                 force: bool = True) -> dict:
    res = Results.load(results_path)
    page, info = build_html(res, title)
    from cape_hpc.io.publication import publish_bytes

    out = publish_bytes(out, page.encode("utf-8"), force=force)
    info["path"] = str(out.resolve())
    info["bytes"] = out.stat().st_size
    return info
