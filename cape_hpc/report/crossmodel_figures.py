"""Cross-model figures and charts (docs/METHODS.md §3.10), read from a results file's ``/crossmodel``
group (``CrossModelResult``, written by ``cape crossmodel --out``) and its ``/internals/<model>``
groups: the ladder of each family with its intervals, the per-layer coupling of several models on a
relative depth axis, the d_rep profiles, the bottleneck curves and the internal vs benchmark phase
table.  The per-model layer x head heat maps are the internals figures of ``figures.py``."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from cape_hpc.crossmodel.results import GROUP, CrossModelResult
from cape_hpc.internals.results import InternalsResult
from cape_hpc.report.data import Results, Skip

__all__ = ["crossmodel_data", "FIGURES", "build_figures", "build_charts"]


def _rel_depth(n: int) -> list[float]:
    return [i / (n - 1) if n > 1 else 1.0 for i in range(n)]


def crossmodel_data(res: Results) -> dict[str, Any]:
    """Everything the cross-model figures draw (Skip when the file has neither group)."""
    cm: CrossModelResult | None = res.optional(GROUP, CrossModelResult)
    internals = res.find(InternalsResult, "/internals")
    if cm is None and len(internals) < 2:
        raise Skip(f"no {GROUP} group (run `cape crossmodel {res.path} --out {res.path}`) and fewer than two "
                   f"/internals groups")
    fam = {r.model: r.family for r in cm.rows} if cm is not None else {}
    models = []
    for path, r in internals:
        c = r.layer_coupling
        ci = r.layer_coupling_ci
        name = path.rsplit("/", 1)[-1].replace("|", "/")   # a sweep's model name (the group), as in the table
        models.append({"model": name, "family": fam.get(name, ""), "depth": _rel_depth(len(c)),
                       "coupling": [float(v) for v in c], "low": [float(v) for v in ci[:, 0]],
                       "high": [float(v) for v in ci[:, 1]], "d_rep": [float(v) for v in r.d_rep],
                       "pca_k": [int(k) for k in r.bottleneck.pca_k],
                       "pca_coupling": [float(v) for v in r.bottleneck.pca_coupling],
                       "hidden": float(r.bottleneck.hidden), "logits": float(r.bottleneck.logits),
                       "bottleneck": bool(r.bottleneck.measured), "source": path})
    ladders = []
    phases = []
    if cm is not None:
        for lad in cm.ladders:
            ci = lad.slope_boot.interval(0.95)
            ladders.append({"family": lad.family, "models": list(lad.models), "x": list(lad.x), "y": list(lad.coupling),
                            "low": list(lad.coupling_low), "high": list(lad.coupling_high), "slope": lad.slope,
                            "slope_low": ci.low, "slope_high": ci.high, "reason": lad.reason})
        phases = [{"model": p.model, "family": p.family, "internal gamma": p.internal_gamma,
                   "internal phase": p.internal_phase, "benchmark gamma": p.benchmark_gamma,
                   "benchmark phase": p.benchmark_phase, "agree": p.agree, "reason": p.reason} for p in cm.phases]
    return {"source": GROUP if cm is not None else "/internals", "quantity": cm.quantity if cm else "",
            "ladders": ladders, "models": models, "phases": phases,
            "agreement": (cm.phase_agreement.n_agree, cm.phase_agreement.n_both) if cm else (0, 0)}


def _err(y, lo, hi):
    y, lo, hi = (np.asarray(v, float) for v in (y, lo, hi))
    return np.vstack([np.clip(np.nan_to_num(y - lo), 0, None), np.clip(np.nan_to_num(hi - y), 0, None)])


# ------------------------------------------------------------------------------- matplotlib


def _new(width=6.4, height=4.4):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), constrained_layout=True)
    return fig, ax


def fig_ladders(res: Results):
    d = crossmodel_data(res)
    lads = [l for l in d["ladders"] if l["x"]]
    if not lads:
        raise Skip(f"no family ladder in {GROUP} (no model with a family and a parameter count)")
    fig, ax = _new()
    for l in lads:
        lab = l["family"] + (f" (slope {l['slope']:.3g}/decade)" if math.isfinite(l["slope"]) else "")
        ax.errorbar(l["x"], l["y"], yerr=_err(l["y"], l["low"], l["high"]), fmt="o-", capsize=3, label=lab)
    ax.set_xlabel("log10 N (parameters)")
    ax.set_ylabel(f"internal coupling ({d['quantity']})")
    ax.set_title("Internal coupling ladder per family (block-bootstrap 95% intervals)")
    ax.legend(fontsize=8)
    return fig


def fig_depth(res: Results):
    d = crossmodel_data(res)
    fig, ax = _new()
    for m in d["models"]:
        ax.plot(m["depth"], m["coupling"], "o-", ms=3, label=m["model"])
        ax.fill_between(m["depth"], m["low"], m["high"], alpha=0.12)
    ax.set_xlabel("relative depth (layer / (L - 1))")
    ax.set_ylabel("cos(mean R, mean T)")
    ax.set_title("Per-layer coupling across models")
    ax.legend(fontsize=7, ncol=2)
    return fig


def fig_drep(res: Results):
    d = crossmodel_data(res)
    fig, ax = _new()
    for m in d["models"]:
        ax.plot(m["depth"], m["d_rep"], "o-", ms=3, label=m["model"])
    ax.set_xlabel("relative depth (layer / (L - 1))")
    ax.set_ylabel("d_rep (participation ratio)")
    ax.set_title("Representational dimension d_rep per layer")
    ax.legend(fontsize=7, ncol=2)
    return fig


def fig_bottleneck(res: Results):
    d = crossmodel_data(res)
    ms = [m for m in d["models"] if m["bottleneck"] and m["pca_k"]]
    if not ms:
        raise Skip("no model with the final tap (bottleneck) in the file")
    fig, ax = _new()
    for m in ms:
        (line,) = ax.plot(m["pca_k"], m["pca_coupling"], "-", label=f"{m['model']} (hidden {m['hidden']:.3f}, "
                                                                     f"logits {m['logits']:.3f})")
        ax.axhline(m["hidden"], color=line.get_color(), lw=0.7, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("k (top-k principal subspace of the final hidden states)")
    ax.set_ylabel("cos(P_k m_R, P_k m_T)")
    ax.set_title("Projection bottleneck curves (k = 1 is +-1 by construction)")
    ax.legend(fontsize=7)
    return fig


FIGURES = {"crossmodel_ladders": fig_ladders, "crossmodel_depth": fig_depth, "crossmodel_drep": fig_drep,
           "crossmodel_bottleneck": fig_bottleneck}


def build_figures(res: Results) -> list:
    """FigureOutcome of every cross-model figure (a skip note when the file lacks the groups)."""
    from cape_hpc.report.figures import FigureOutcome

    out = []
    for name, fn in FIGURES.items():
        try:
            out.append(FigureOutcome(name, fn(res)))
        except Skip as exc:
            out.append(FigureOutcome(name, None, str(exc)))
    return out


# ------------------------------------------------------------------------------- plotly charts


def _layout(title, xlab, ylab, **kw):
    from cape_hpc.report.html import _layout as lay  # noqa: PLC0415 - the report's one chart layout

    return lay(title, xlab, ylab, **kw)


def _perr(y, lo, hi) -> dict:
    e = _err(y, lo, hi)
    return {"type": "data", "symmetric": False, "array": e[1].tolist(), "arrayminus": e[0].tolist(), "visible": True}


def build_charts(res: Results) -> tuple[list[tuple[str, dict, dict]], list[dict]]:
    """([(title, plotly spec, data with 'rows' for the table)], skipped notes)."""
    try:
        d = crossmodel_data(res)
    except Skip as exc:
        return [], [{"chart": "Cross-model internals", "note": str(exc)}]
    out = []
    src = d["source"]
    lads = [l for l in d["ladders"] if l["x"]]
    if lads:
        traces = [{"type": "scatter", "mode": "lines+markers", "name": l["family"], "x": l["x"], "y": l["y"],
                   "text": l["models"], "error_y": _perr(l["y"], l["low"], l["high"]),
                   "hovertemplate": "%{text}: %{y:.3f}<extra></extra>"} for l in lads]
        rows = [{"family": l["family"], "model": m, "log10 N": x, "coupling": y, "95% lo": lo, "95% hi": hi,
                 "ladder slope": l["slope"], "slope 95%": f"[{l['slope_low']:.3g}, {l['slope_high']:.3g}]",
                 "note": l["reason"]}
                for l in lads for m, x, y, lo, hi in zip(l["models"], l["x"], l["y"], l["low"], l["high"])]
        out.append(("Cross-model: internal coupling ladder per family",
                    {"data": traces, "layout": _layout("Internal coupling ladder per family (95% intervals)",
                                                       "log10 N", f"internal coupling ({d['quantity']})")},
                    {"rows": rows, "source": src}))
    depth = [{"type": "scatter", "mode": "lines+markers", "name": m["model"], "x": m["depth"], "y": m["coupling"],
              "error_y": _perr(m["coupling"], m["low"], m["high"])} for m in d["models"]]
    rows = [{"model": m["model"], "layer": i, "relative depth": x, "coupling": c, "d_rep": r}
            for m in d["models"] for i, (x, c, r) in enumerate(zip(m["depth"], m["coupling"], m["d_rep"]))]
    out.append(("Cross-model: per-layer coupling on a relative depth axis",
                {"data": depth, "layout": _layout("Per-layer coupling across models", "relative depth",
                                                  "cos(mean R, mean T)")}, {"rows": rows, "source": "/internals"}))
    drep = [{"type": "scatter", "mode": "lines+markers", "name": m["model"], "x": m["depth"], "y": m["d_rep"]}
            for m in d["models"]]
    out.append(("Cross-model: d_rep profiles",
                {"data": drep, "layout": _layout("d_rep per layer", "relative depth", "d_rep")},
                {"rows": rows, "source": "/internals"}))
    bms = [m for m in d["models"] if m["bottleneck"] and m["pca_k"]]
    if bms:
        tr = [{"type": "scatter", "mode": "lines", "name": m["model"], "x": m["pca_k"], "y": m["pca_coupling"]}
              for m in bms]
        brows = [{"model": m["model"], "hidden": m["hidden"], "logits": m["logits"],
                  "gain": m["logits"] - m["hidden"]} for m in bms]
        out.append(("Cross-model: projection bottleneck curves",
                    {"data": tr, "layout": _layout("Bottleneck: coupling in the top-k PCA subspace", "k",
                                                   "cos(P_k m_R, P_k m_T)", xaxis={"title": {"text": "k"},
                                                                                   "type": "log"})},
                    {"rows": brows, "source": "/internals"}))
    if d["phases"]:
        cols = list(d["phases"][0])
        k, n = d["agreement"]
        spec = {"data": [{"type": "table", "header": {"values": cols},
                          "cells": {"values": [[_cell(p[c]) for p in d["phases"]] for c in cols]}}],
                "layout": _layout(f"Internal vs benchmark phase ({k} of {n} agree)", "", "")}
        out.append(("Cross-model: internal vs benchmark phase", spec, {"rows": d["phases"], "source": src}))
    return out, []


def _cell(v):
    if isinstance(v, float):
        return None if not math.isfinite(v) else round(v, 4)
    return v
