"""The steering figures (docs/METHODS.md §4): the intervention rate per model and alpha with its
Wilson interval, and the held-out dose-response (correction and damage) with the chosen point."""
from __future__ import annotations

from typing import Any

import numpy as np

from cape_hpc.report.data import Results, ci_bounds
from cape_hpc.report.layout import SteeringOutcomeResult, SteeringResult
from cape_hpc.report.registry import FigureSpec
from cape_hpc.report.style import error_bars, found, label_axes, layout, new_figure, plotly_error

RATE_RANGE = (-0.02, 1.02)


def _series(rows: list[dict], key) -> list[tuple[Any, list[dict]]]:
    """Rows grouped by ``key(row)`` (first-seen order), each sorted by alpha."""
    out = []
    for k in dict.fromkeys(key(r) for r in rows):
        out.append((k, sorted((r for r in rows if key(r) == k), key=lambda r: r["alpha"])))
    return out


# --------------------------------------------------------------------------- intervention rate

def steering(res: Results) -> dict[str, Any]:
    rows = []
    for path, s in found(res, SteeringResult, "/steering", "cape steer --out"):
        lo, hi = ci_bounds(s.rate_ci)
        rows.append({"model": s.model, "run": path.rsplit("/", 1)[-1], "alpha": s.alpha, "rate": s.rate,
                     "lo": lo, "hi": hi, "level": s.rate_ci.level, "n": s.n_prompts, "n_changed": s.n_changed,
                     "scale": s.scale})
    rows.sort(key=lambda r: (r["model"], r["alpha"], r["run"]))
    return {"rows": rows, "source": "/steering"}


def fig_steering(d: dict):
    fig, (ax,) = new_figure(width=6.5, height=4.5)
    for i, (model, rs) in enumerate(_series(d["rows"], lambda r: r["model"])):
        a = np.array([r["alpha"] for r in rs])
        y = np.array([r["rate"] for r in rs])
        err = error_bars(y, [r["lo"] for r in rs], [r["hi"] for r in rs])
        ax.errorbar(a + 0.01 * i, y, yerr=err, fmt="o-", capsize=4, label=model)
    label_axes(ax, "alpha", "intervention rate (changed outputs)",
               "Steering: intervention rate with Wilson 95% interval", ylim=RATE_RANGE)
    return fig


def chart_steering(d: dict) -> dict:
    traces = []
    for model, rs in _series(d["rows"], lambda r: r["model"]):
        y = [r["rate"] for r in rs]
        traces.append({"type": "scatter", "mode": "lines+markers", "name": model, "x": [r["alpha"] for r in rs],
                       "y": y, "error_y": plotly_error(y, [r["lo"] for r in rs], [r["hi"] for r in rs])})
    return {"data": traces, "layout": layout("Steering: intervention rate (Wilson 95% interval)", "alpha",
                                             "intervention rate", yaxis={"title": {"text": "intervention rate"},
                                                                         "range": list(RATE_RANGE)})}


# --------------------------------------------------------------------------- dose-response

def steering_dose(res: Results) -> dict[str, Any]:
    """The held-out dose-response of every outcome run: per (model, layer) the correction and damage
    rates against alpha with their Wilson intervals, and the chosen operating point."""
    stored = found(res, SteeringOutcomeResult, "/steering", "cape steer --out")
    rows, chosen = [], []
    for path, s in stored:
        for p in s.points:
            clo, chi = ci_bounds(p.correction_ci)
            dlo, dhi = ci_bounds(p.damage_ci)
            rows.append({"model": s.model, "layer": p.layer, "alpha": p.alpha, "accuracy": p.accuracy,
                         "correction": p.correction_rate, "correction_lo": clo, "correction_hi": chi,
                         "damage": p.damage_rate, "damage_lo": dlo, "damage_hi": dhi, "kl": p.kl,
                         "n_corrected": p.n_corrected, "n_base_wrong": p.n_base_wrong, "n_damaged": p.n_damaged,
                         "n_base_right": p.n_base_right, "mcnemar_p": p.mcnemar_p, "group": path})
        if s.chosen is not None:
            chosen.append({"model": s.model, "layer": s.chosen_layer, "alpha": s.chosen_alpha,
                           "correction": s.chosen.correction_rate, "rule": s.rule})
    return {"rows": rows, "chosen": chosen, "level": stored[0][1].level, "source": "/steering"}


DOSE = (("correction", "o-", "solid"), ("damage", "s--", "dash"))


def _dose_series(d: dict):
    """((model, layer), what, matplotlib format, plotly dash, rows sorted by alpha) of every curve."""
    for key, rs in _series(d["rows"], lambda r: (r["model"], r["layer"])):
        for what, fmt, dash in DOSE:
            yield key, what, fmt, dash, rs


def fig_steering_dose(d: dict):
    """Held-out correction and damage rates against alpha (Wilson intervals), per model and layer;
    the chosen operating point circled."""
    fig, (ax,) = new_figure(width=6.8, height=4.6)
    colours = {}
    for (model, layer), what, fmt, _, rs in _dose_series(d):
        colour = colours.setdefault((model, layer), f"C{len(colours)}")
        y = np.array([r[what] for r in rs], float)
        err = error_bars(y, [r[f"{what}_lo"] for r in rs], [r[f"{what}_hi"] for r in rs])
        ax.errorbar(np.array([r["alpha"] for r in rs]), y, yerr=err, fmt=fmt, capsize=3, color=colour,
                    label=f"{model} L{layer}: {what}")
    for c in d["chosen"]:
        ax.plot([c["alpha"]], [c["correction"]], "o", ms=14, mfc="none", mec="k", label=f"chosen: {c['model']}")
    label_axes(ax, "alpha", "rate (held-out items)",
               f"Steering dose-response: correction and damage ({d['level']:.0%} Wilson)", ylim=RATE_RANGE,
               legend=7)
    return fig


def chart_steering_dose(d: dict) -> dict:
    traces = []
    for (model, layer), what, _, dash, rs in _dose_series(d):
        y = [r[what] for r in rs]
        traces.append({"type": "scatter", "mode": "lines+markers", "name": f"{model} L{layer}: {what}",
                       "x": [r["alpha"] for r in rs], "y": y, "line": {"dash": dash},
                       "error_y": plotly_error(y, [r[f"{what}_lo"] for r in rs], [r[f"{what}_hi"] for r in rs])})
    for c in d["chosen"]:
        traces.append({"type": "scatter", "mode": "markers", "name": f"chosen: {c['model']} L{c['layer']}",
                       "x": [c["alpha"]], "y": [c["correction"]],
                       "marker": {"size": 16, "symbol": "circle-open", "color": "black"}})
    return {"data": traces, "layout": layout(f"Steering dose-response: held-out correction and damage "
                                             f"({d['level']:.0%} Wilson)", "alpha", "rate",
                                             yaxis={"title": {"text": "rate"}, "range": list(RATE_RANGE)})}


FIGURES = (
    FigureSpec("steering", "Steering intervention rate", "/steering/<model>/<run>", steering, fig_steering,
               chart_steering),
    FigureSpec("steering_dose", "Steering dose-response (held-out correction and damage)",
               "/steering/<model>/outcome_<items>", steering_dose, fig_steering_dose, chart_steering_dose),
)
