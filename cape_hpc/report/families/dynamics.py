"""The dynamics figures (docs/METHODS.md §2.13): the ODE's holdout trajectories beside the
polynomial baselines with their holdout errors, and the prediction at a new size."""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from cape_hpc.report.data import Results, Skip
from cape_hpc.report.layout import DynamicsResult, PredictResult
from cape_hpc.report.registry import Card, FigureSpec
from cape_hpc.report.style import PALETTE, error_bars, label_axes, layout, new_figure, plotly_error, found


# --------------------------------------------------------------------------- data

def _trajectories(path: str, d: DynamicsResult) -> list[dict]:
    """Actual vs ODE (and each polynomial baseline) per held-out family, [sizes, benchmarks]."""
    out = []
    predictors = list(dict.fromkeys(r.predictor for r in d.predictions))
    for fam in dict.fromkeys(r.family for r in d.predictions):
        x, _, A, P = d.trajectory(fam, "ode")
        base = {p: d.trajectory(fam, p)[3].tolist() for p in predictors if p != "ode"}
        label = f"{d.model}: train {'+'.join(d.train)}, holdout {fam}"
        out.append({"label": label, "path": path, "x": x.tolist(), "benchmarks": list(d.benchmarks),
                    "actual": A.tolist(), "predicted": P.tolist(), "baselines": base})
    return out


def _errors(path: str, d: DynamicsResult) -> list[dict]:
    """Holdout error of the ODE beside every polynomial baseline (relative MAE)."""
    out = []
    if d.holdout_error is not None:
        he = d.holdout_error
        out.append({"label": f"ODE ({d.model})", "error": he.rel_mae, "path": path, "mape": he.mape,
                    "mae_points": he.mae_points})
    for b in d.baselines:
        out.append({"label": f"poly deg {b.degree}", "error": b.rel_mae, "path": path, "mape": b.mape,
                    "mae_points": b.mae_points})
    return out


def dynamics(res: Results) -> dict[str, Any]:
    """ODE trajectories (actual vs predicted) and the holdout error beside the polynomial baselines."""
    stored = found(res, DynamicsResult, "/dynamics", "cape dynamics --out")
    trajectories, errors = [], []
    for path, d in stored:
        trajectories += _trajectories(path, d)
        errors += _errors(path, d)
    if not trajectories and not errors:
        raise Skip(f"{stored[0][0]} has no holdout predictions (no --holdout family)")
    return {"trajectories": trajectories, "errors": errors, "source": "/dynamics"}


def predictions(res: Results) -> dict[str, Any]:
    """Stored PredictResults (``cape predict --out``): start scores, the ODE's prediction with its 95%
    bootstrap band, and the polynomial baselines, per benchmark."""
    out = []
    for path, p in found(res, PredictResult, "/dynamics/predict", "cape predict --out"):
        cis = [p.interval(b, 0.95) for b in p.benchmarks]
        lo, hi = [ci.low for ci in cis], [ci.high for ci in cis]
        out.append({"label": f"{p.family} at N = {p.size:.3g} (from {p.start_model}, {p.model})", "path": path,
                    "benchmarks": list(p.benchmarks), "start": list(p.start_scores), "ode": list(p.ode),
                    "lo": lo, "hi": hi, "baselines": {k: list(v) for k, v in p.baselines.items()}})
    return {"predictions": out, "source": "/dynamics/predict"}


# --------------------------------------------------------------------------- holdout trajectories

def _best_baseline(tr: dict, errors: list[dict]) -> str | None:
    """The polynomial baseline with the lowest finite holdout error ('poly2'), or None."""
    if not (tr.get("baselines") and errors):
        return None
    errs = {e["label"].replace("poly deg ", "poly"): e["error"] for e in errors if e["label"].startswith("poly")}
    cands = [b for b in tr["baselines"] if b in errs and math.isfinite(errs[b])]
    return min(cands, key=lambda b: errs[b]) if cands else None


def _trajectory_panel(ax, tr: dict, errors: list[dict]) -> None:
    A, P = np.asarray(tr["actual"], float), np.asarray(tr["predicted"], float)
    best = _best_baseline(tr, errors)
    for j, b in enumerate(tr["benchmarks"]):
        ax.plot(tr["x"], A[:, j], "o", color=f"C{j}", label=f"{b} actual", gid=f"actual:{b}")
        ax.plot(tr["x"], P[:, j], "-", color=f"C{j}", label=f"{b} ODE", gid=f"ode:{b}")
        if best:
            ax.plot(tr["x"], np.asarray(tr["baselines"][best], float)[:, j], ":", color=f"C{j}",
                    label=f"{b} {best}" if j == 0 else f"_{b} {best}", gid=f"base:{b}")
    label_axes(ax, "log10 N", "score (%)", tr["label"] + (f"\n(dotted: best baseline {best})" if best else ""),
               title_size=9, legend=6.5, ncol=2)


def _errors_panel(ax, errors: list[dict]) -> None:
    labels = [e["label"] for e in errors]
    vals = [e["error"] for e in errors]
    colors = ["#999999" if re.search(r"poly|baseline", lab, re.I) else "#1f77b4" for lab in labels]
    ax.barh(np.arange(len(vals)), vals, color=colors)
    ax.set_yticks(np.arange(len(vals)), labels, fontsize=8)
    ax.invert_yaxis()
    label_axes(ax, "holdout error: mean|pred - actual| / mean(actual)", "model",
               "Holdout: ODE vs polynomial baselines", title_size=10, legend=None)


def fig_dynamics(d: dict):
    """Left: the holdout family's scores, the ODE's prediction and the best polynomial baseline;
    right: holdout error of the ODE beside every polynomial baseline."""
    trajs = d["trajectories"][:1]
    fig, axes = new_figure(ncols=len(trajs) + (1 if d["errors"] else 0), width=6.0, height=4.6)
    for ax, tr in zip(axes, trajs):
        _trajectory_panel(ax, tr, d["errors"])
    if d["errors"]:
        _errors_panel(axes[len(trajs)], d["errors"])
    return fig


def _trajectory_chart(tr: dict) -> dict:
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
    return {"data": traces, "layout": layout(f"Holdout prediction: {tr['label']}", "log10 N", "score (%)")}


def _errors_chart(errors: list[dict]) -> dict:
    labels = [e["label"] for e in errors]
    return {"data": [{"type": "bar", "orientation": "h", "y": labels, "x": [e["error"] for e in errors],
                      "marker": {"color": ["#999999" if ("poly" in lab or "baseline" in lab) else "#1f77b4"
                                           for lab in labels]}}],
            "layout": layout("Holdout error: ODE vs polynomial baselines", "relative error", "",
                             margin={"l": 160, "r": 20, "t": 50, "b": 55})}


def _trajectory_rows(d: dict) -> list[dict]:
    rows = [{"trajectory": t["label"], "log10 N": x, **{f"{b} actual": a[j] for j, b in enumerate(t["benchmarks"])},
             **{f"{b} ODE": pr[j] for j, b in enumerate(t["benchmarks"])}}
            for t in d["trajectories"] for x, a, pr in zip(t["x"], t["actual"], t["predicted"])]
    return rows + [{"trajectory": e["label"], "log10 N": None, "holdout error": e["error"]} for e in d["errors"]]


def chart_dynamics(d: dict) -> list[Card]:
    """One card per holdout trajectory (the table: every trajectory) and one of the holdout errors."""
    rows = _trajectory_rows(d)
    cards = [Card(f"dynamics: {tr['label']}", _trajectory_chart(tr), rows, d["source"]) for tr in d["trajectories"]]
    if d["errors"]:
        cards.append(Card("dynamics: holdout errors", _errors_chart(d["errors"]),
                          [{"model": e["label"], "holdout error": e["error"], "group": e["path"]}
                           for e in d["errors"]], d["source"]))
    return cards


# --------------------------------------------------------------------------- prediction at a new size

def fig_predict(d: dict):
    """Predicted scores at a new size: the start model's scores, the ODE with its 95% band, baselines."""
    preds = d["predictions"][:4]
    fig, axes = new_figure(ncols=len(preds), width=5.6, height=4.2)
    for ax, p in zip(axes, preds):
        x = np.arange(len(p["benchmarks"]))
        ax.bar(x - 0.2, p["start"], 0.4, color="#cccccc", label="start model")
        ode, lo, hi = (np.asarray(p[k], float) for k in ("ode", "lo", "hi"))
        ax.bar(x + 0.2, ode, 0.4, color="#1f77b4", label="ODE prediction")
        ax.errorbar(x + 0.2, ode, yerr=error_bars(ode, lo, hi), fmt="none",
                    ecolor="k", capsize=3, label="95% band")
        for j, (name, vals) in enumerate(sorted(p["baselines"].items())):
            ax.plot(x + 0.2, vals, "_", ms=14, mew=2, color=f"C{j + 1}", label=name)
        ax.set_xticks(x, p["benchmarks"])
        label_axes(ax, "benchmark", "score (%)", p["label"], title_size=9, legend=7)
    return fig


def chart_predict(d: dict) -> dict:
    traces = []
    for i, p in enumerate(d["predictions"]):
        c = PALETTE[i % len(PALETTE)]
        traces.append({"type": "bar", "name": f"start: {p['label']}", "x": p["benchmarks"], "y": p["start"],
                       "marker": {"color": "#cccccc"}, "legendgroup": p["label"]})
        traces.append({"type": "bar", "name": f"ODE: {p['label']}", "x": p["benchmarks"], "y": p["ode"],
                       "marker": {"color": c}, "error_y": plotly_error(p["ode"], p["lo"], p["hi"]),
                       "legendgroup": p["label"]})
        for name, vals in sorted(p["baselines"].items()):
            traces.append({"type": "scatter", "mode": "markers", "name": f"{name}: {p['label']}", "x": p["benchmarks"],
                           "y": vals, "marker": {"symbol": "line-ew-open", "size": 16, "line": {"width": 2}},
                           "legendgroup": p["label"], "visible": "legendonly" if i else True})
    return {"data": traces, "layout": layout("Predicted scores at a new size (ODE with 95% band, baselines)",
                                             "benchmark", "score (%)", barmode="group")}


def table_predict(d: dict) -> list[dict]:
    return [{"prediction": p["label"], "benchmark": b, "start": s0, "ODE": o, "95% lo": lo, "95% hi": hi,
             **{k: v[j] for k, v in sorted(p["baselines"].items())}}
            for p in d["predictions"] for j, (b, s0, o, lo, hi) in
            enumerate(zip(p["benchmarks"], p["start"], p["ode"], p["lo"], p["hi"]))]


FIGURES = (
    FigureSpec("predict", "Prediction at a new size", "/dynamics/predict/<family>/<size>", predictions, fig_predict,
               chart_predict, table_predict),
    FigureSpec("dynamics", "Dynamics (ODE fits, holdout vs baselines)", "/dynamics/<model>/<train>--<holdout>",
               dynamics, fig_dynamics, chart_dynamics),
)
