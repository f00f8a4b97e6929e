"""The cross-model figures and charts (docs/METHODS.md §3.10), read from a results file's
``/crossmodel`` group (``CrossModelResult``, written by ``cape crossmodel --out``) and its
``/internals/<model>`` groups: the ladder of each family with its intervals, the per-layer coupling
of several models on a relative depth axis, the d_rep profiles, the bottleneck curves and the
internal vs benchmark phase table.  The per-model layer x head heat maps are the internals figures."""
from __future__ import annotations

import math
from typing import Any

from cape_hpc.crossmodel.results import GROUP, CrossModelResult
from cape_hpc.internals.results import InternalsResult
from cape_hpc.report.data import Results, Skip
from cape_hpc.report.registry import Card, FigureSpec
from cape_hpc.report.style import error_bars, label_axes, layout, new_figure, plotly_error

DEPTH = "relative depth (layer / (L - 1))"


def _rel_depth(n: int) -> list[float]:
    return [i / (n - 1) if n > 1 else 1.0 for i in range(n)]


def _model(path: str, r: InternalsResult, fam: dict[str, str]) -> dict[str, Any]:
    c = r.layer_coupling
    ci = r.layer_coupling_ci
    name = path.rsplit("/", 1)[-1].replace("|", "/")   # a sweep's model name (the group), as in the table
    return {"model": name, "family": fam.get(name, ""), "depth": _rel_depth(len(c)),
            "coupling": [float(v) for v in c], "low": [float(v) for v in ci[:, 0]],
            "high": [float(v) for v in ci[:, 1]], "d_rep": [float(v) for v in r.d_rep],
            "pca_k": [int(k) for k in r.bottleneck.pca_k],
            "pca_coupling": [float(v) for v in r.bottleneck.pca_coupling],
            "hidden": float(r.bottleneck.hidden), "logits": float(r.bottleneck.logits),
            "bottleneck": bool(r.bottleneck.measured), "source": path}


def _ladders(cm: CrossModelResult) -> list[dict]:
    out = []
    for lad in cm.ladders:
        ci = lad.slope_boot.interval(0.95)
        out.append({"family": lad.family, "models": list(lad.models), "x": list(lad.x), "y": list(lad.coupling),
                    "low": list(lad.coupling_low), "high": list(lad.coupling_high), "slope": lad.slope,
                    "slope_low": ci.low, "slope_high": ci.high, "reason": lad.reason})
    return out


def crossmodel_data(res: Results) -> dict[str, Any]:
    """Everything the cross-model figures draw (Skip when the file has neither group)."""
    cm: CrossModelResult | None = res.optional(GROUP, CrossModelResult)
    internals = res.find(InternalsResult, "/internals")
    if cm is None and len(internals) < 2:
        raise Skip(f"no {GROUP} group (run `cape crossmodel {res.path} --out {res.path}`) and fewer than two "
                   f"/internals groups")
    fam = {r.model: r.family for r in cm.rows} if cm is not None else {}
    phases = [] if cm is None else [
        {"model": p.model, "family": p.family, "internal gamma": p.internal_gamma,
         "internal phase": p.internal_phase, "benchmark gamma": p.benchmark_gamma,
         "benchmark phase": p.benchmark_phase, "agree": p.agree, "reason": p.reason} for p in cm.phases]
    return {"source": GROUP if cm is not None else "/internals", "quantity": cm.quantity if cm else "",
            "ladders": _ladders(cm) if cm is not None else [],
            "models": [_model(path, r, fam) for path, r in internals], "phases": phases,
            "agreement": (cm.phase_agreement.n_agree, cm.phase_agreement.n_both) if cm else (0, 0)}


def _drawn_ladders(d: dict) -> list[dict]:
    return [l for l in d["ladders"] if l["x"]]


def _bottleneck_models(d: dict) -> list[dict]:
    return [m for m in d["models"] if m["bottleneck"] and m["pca_k"]]


# --------------------------------------------------------------------------- ladders

def fig_ladders(d: dict):
    lads = _drawn_ladders(d)
    if not lads:
        raise Skip(f"no family ladder in {GROUP} (no model with a family and a parameter count)")
    fig, (ax,) = new_figure()
    for l in lads:
        lab = l["family"] + (f" (slope {l['slope']:.3g}/decade)" if math.isfinite(l["slope"]) else "")
        ax.errorbar(l["x"], l["y"], yerr=error_bars(l["y"], l["low"], l["high"]), fmt="o-", capsize=3, label=lab)
    label_axes(ax, "log10 N (parameters)", f"internal coupling ({d['quantity']})",
               "Internal coupling ladder per family (block-bootstrap 95% intervals)")
    return fig


def chart_ladders(d: dict) -> list[Card]:
    lads = _drawn_ladders(d)
    if not lads:
        return []
    traces = [{"type": "scatter", "mode": "lines+markers", "name": l["family"], "x": l["x"], "y": l["y"],
               "text": l["models"], "error_y": plotly_error(l["y"], l["low"], l["high"]),
               "hovertemplate": "%{text}: %{y:.3f}<extra></extra>"} for l in lads]
    rows = [{"family": l["family"], "model": m, "log10 N": x, "coupling": y, "95% lo": lo, "95% hi": hi,
             "ladder slope": l["slope"], "slope 95%": f"[{l['slope_low']:.3g}, {l['slope_high']:.3g}]",
             "note": l["reason"]}
            for l in lads for m, x, y, lo, hi in zip(l["models"], l["x"], l["y"], l["low"], l["high"])]
    spec = {"data": traces, "layout": layout("Internal coupling ladder per family (95% intervals)", "log10 N",
                                             f"internal coupling ({d['quantity']})")}
    return [Card("Cross-model: internal coupling ladder per family", spec, rows, d["source"])]


# --------------------------------------------------------------------------- layer profiles

def _depth_figure(d: dict, key: str, ylabel: str, title: str, band: bool):
    fig, (ax,) = new_figure()
    for m in d["models"]:
        ax.plot(m["depth"], m[key], "o-", ms=3, label=m["model"])
        if band:
            ax.fill_between(m["depth"], m["low"], m["high"], alpha=0.12)
    label_axes(ax, DEPTH, ylabel, title, legend=7, ncol=2)
    return fig


def fig_depth(d: dict):
    return _depth_figure(d, "coupling", "cos(mean R, mean T)", "Per-layer coupling across models", band=True)


def fig_drep(d: dict):
    return _depth_figure(d, "d_rep", "d_rep (participation ratio)", "Representational dimension d_rep per layer",
                         band=False)


def _depth_rows(d: dict) -> list[dict]:
    return [{"model": m["model"], "layer": i, "relative depth": x, "coupling": c, "d_rep": r}
            for m in d["models"] for i, (x, c, r) in enumerate(zip(m["depth"], m["coupling"], m["d_rep"]))]


def chart_depth(d: dict) -> list[Card]:
    traces = [{"type": "scatter", "mode": "lines+markers", "name": m["model"], "x": m["depth"], "y": m["coupling"],
               "error_y": plotly_error(m["coupling"], m["low"], m["high"])} for m in d["models"]]
    spec = {"data": traces, "layout": layout("Per-layer coupling across models", "relative depth",
                                             "cos(mean R, mean T)")}
    return [Card("Cross-model: per-layer coupling on a relative depth axis", spec, _depth_rows(d), "/internals")]


def chart_drep(d: dict) -> list[Card]:
    traces = [{"type": "scatter", "mode": "lines+markers", "name": m["model"], "x": m["depth"], "y": m["d_rep"]}
              for m in d["models"]]
    spec = {"data": traces, "layout": layout("d_rep per layer", "relative depth", "d_rep")}
    return [Card("Cross-model: d_rep profiles", spec, _depth_rows(d), "/internals")]


# --------------------------------------------------------------------------- bottleneck

def fig_bottleneck(d: dict):
    ms = _bottleneck_models(d)
    if not ms:
        raise Skip("no model with the final tap (bottleneck) in the file")
    fig, (ax,) = new_figure()
    for m in ms:
        (line,) = ax.plot(m["pca_k"], m["pca_coupling"], "-", label=f"{m['model']} (hidden {m['hidden']:.3f}, "
                                                                     f"logits {m['logits']:.3f})")
        ax.axhline(m["hidden"], color=line.get_color(), lw=0.7, ls=":")
    ax.set_xscale("log")
    label_axes(ax, "k (top-k principal subspace of the final hidden states)", "cos(P_k m_R, P_k m_T)",
               "Projection bottleneck curves (k = 1 is +-1 by construction)", legend=7)
    return fig


def chart_bottleneck(d: dict) -> list[Card]:
    ms = _bottleneck_models(d)
    if not ms:
        return []
    traces = [{"type": "scatter", "mode": "lines", "name": m["model"], "x": m["pca_k"], "y": m["pca_coupling"]}
              for m in ms]
    rows = [{"model": m["model"], "hidden": m["hidden"], "logits": m["logits"], "gain": m["logits"] - m["hidden"]}
            for m in ms]
    spec = {"data": traces, "layout": layout("Bottleneck: coupling in the top-k PCA subspace", "k",
                                             "cos(P_k m_R, P_k m_T)", xaxis={"title": {"text": "k"}, "type": "log"})}
    return [Card("Cross-model: projection bottleneck curves", spec, rows, "/internals")]


# --------------------------------------------------------------------------- phase table

def _cell(v):
    if isinstance(v, float):
        return None if not math.isfinite(v) else round(v, 4)
    return v


def chart_phases(d: dict) -> list[Card]:
    if not d["phases"]:
        return []
    cols = list(d["phases"][0])
    k, n = d["agreement"]
    spec = {"data": [{"type": "table", "header": {"values": cols},
                      "cells": {"values": [[_cell(p[c]) for p in d["phases"]] for c in cols]}}],
            "layout": layout(f"Internal vs benchmark phase ({k} of {n} agree)", "", "")}
    return [Card("Cross-model: internal vs benchmark phase", spec, d["phases"], d["source"])]


_SKIP_AS = "Cross-model internals"
FIGURES = (
    FigureSpec("crossmodel_ladders", "Cross-model: internal coupling ladder per family", GROUP, crossmodel_data,
               fig_ladders, chart_ladders, skip_as=_SKIP_AS, answer=True),
    FigureSpec("crossmodel_depth", "Cross-model: per-layer coupling on a relative depth axis", "/internals/<model>",
               crossmodel_data, fig_depth, chart_depth, skip_as=_SKIP_AS),
    FigureSpec("crossmodel_drep", "Cross-model: d_rep profiles", "/internals/<model>", crossmodel_data, fig_drep,
               chart_drep, skip_as=_SKIP_AS),
    FigureSpec("crossmodel_bottleneck", "Cross-model: projection bottleneck curves", "/internals/<model>",
               crossmodel_data, fig_bottleneck, chart_bottleneck, skip_as=_SKIP_AS),
    FigureSpec("crossmodel_phases", "Cross-model: internal vs benchmark phase", f"{GROUP} (phases)",
               crossmodel_data, None, chart_phases, skip_as=_SKIP_AS, answer=True),
)
