"""Matplotlib figures (Agg) from a results file.

Every ``fig_*`` function takes a ``Results`` and returns a ``matplotlib.figure.Figure`` (no file
writing here: ``cape figures`` saves them), or raises ``Skip`` with a note naming the missing group.
``build_figures`` runs them all and returns ``FigureOutcome``s: a figure, or a skip note.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cape_hpc.report import extract as ex  # noqa: E402
from cape_hpc.report.data import Results, Skip  # noqa: E402


def _yerr(y, lo, hi) -> np.ndarray:
    """[2, n] error-bar lengths from an interval; 0 where a bound is NaN or lies (by rounding, e.g.
    a Wilson bound of 1e-17 above a rate of 0) on the wrong side of the estimate."""
    y, lo, hi = (np.asarray(v, float) for v in (y, lo, hi))
    return np.clip(np.nan_to_num(np.vstack([y - lo, hi - y]), nan=0.0), 0.0, None)


def _new(ncols: int = 1, width: float = 6.4, height: float = 4.4) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * ncols if ncols > 1 else width, height), layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _phase_legend(ax, phases_present) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=ex.PHASE_COLORS[p], label=p or "no phase (smallest)")
               for p in (*ex.PHASE_ORDER, "") if p in phases_present]
    if handles:
        leg = ax.legend(handles=handles, title="phase", loc="best", fontsize=8)
        ax.add_artist(leg)


def fig_phase_diagram(res: Results) -> Figure:
    d = ex.phase_diagram(res)
    fig, (ax,) = _new(width=7.0, height=5.2)
    present = set()
    markers = "os^Dv<>pPX*h"
    for i, fam in enumerate(d["families"]):
        ax.plot(fam["b1"], fam["b2"], "-", color="0.6", lw=1, zorder=1, gid=f"traj:{fam['family']}",
                label=fam["family"])
        cols = [ex.PHASE_COLORS.get(p, "#1f77b4") for p in fam["phase"]]
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


def _nc_clip(nc: dict, lo: float, hi: float) -> str:
    """'' when the estimate is inside [lo, hi], else a short note (the panel is limited to the data)."""
    if lo <= nc["log_nc"] <= hi:
        return ""
    return f"{nc['estimator']}: 10^{nc['log_nc']:.1f} (off axis)"


def fig_running_gamma(res: Results) -> Figure:
    """Small multiples: gamma(N) of each family with its N_c estimates (line) and 95% intervals (band);
    a last panel shows every family with the pooled estimates."""
    d = ex.running_gamma(res)
    fams = d["families"]
    pooled = [n for n in d["nc"] if n["family"] == "pooled" and math.isfinite(n["log_nc"])]
    npan = len(fams) + (1 if pooled else 0)
    ncols = min(4, npan)
    nrows = math.ceil(npan / ncols)
    fig = Figure(figsize=(3.6 * ncols, 2.7 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    ests = list(dict.fromkeys(n["estimator"] for n in d["nc"]))
    est_color = {e: f"C{i + 1}" for i, e in enumerate(ests)}
    finite = np.array([g for f in fams for g in f["gamma"] if math.isfinite(g)])
    ylim = (-1.0, 1.0)
    if finite.size:  # a single huge gamma (tiny dB1) should not flatten the rest
        lo, hi = np.quantile(finite, [0.02, 0.98])
        pad = 0.15 * (hi - lo + 1e-9)
        ylim = (min(lo - pad, -0.5), max(hi + pad, 0.5))

    def band(ax):
        ax.axhline(0, color="k", lw=0.7)
        ax.axhspan(d["tax_below"], d["bonus_above"], color="0.9", zorder=0)

    seen_labels = set()
    for ax, fam in zip(axes, fams):
        x = np.array(fam["x"], float)
        band(ax)
        ax.plot(x, fam["gamma"], "o-", ms=3.5, lw=1.2, color="C0", label=fam["family"], gid=f"gamma:{fam['family']}")
        xlo, xhi = (np.nanmin(x) - 0.4, np.nanmax(x) + 0.4) if x.size else (8, 11)
        off = []
        for nc in d["nc"]:
            if nc["family"] != fam["family"] or not math.isfinite(nc["log_nc"]):
                continue
            c = est_color[nc["estimator"]]
            lab = f"N_c {nc['estimator']}"
            ax.axvline(nc["log_nc"], color=c, ls="--", lw=1.3, gid=f"nc:{fam['family']}:{nc['estimator']}",
                       label=lab if lab not in seen_labels else "_" + lab)
            seen_labels.add(lab)
            if math.isfinite(nc["lo"]) and math.isfinite(nc["hi"]):
                ax.axvspan(nc["lo"], nc["hi"], color=c, alpha=0.12)
            note = _nc_clip(nc, xlo, xhi)
            if note:
                off.append(note)
        ax.set_xlim(xlo, xhi)
        ax.set_ylim(*ylim)
        ax.set_title(fam["family"], fontsize=9)
        if off:
            ax.text(0.02, 0.03, "\n".join(off), transform=ax.transAxes, fontsize=6.5, color="0.3")
    if pooled:
        ax = axes[len(fams)]
        band(ax)
        for fam in fams:
            ax.plot(fam["x"], fam["gamma"], "-", lw=0.8, color="0.6")
        for nc in pooled:
            c = est_color[nc["estimator"]]
            ax.axvline(nc["log_nc"], color=c, ls="--", lw=1.3, gid=f"nc:pooled:{nc['estimator']}")
            if math.isfinite(nc["lo"]) and math.isfinite(nc["hi"]):
                ax.axvspan(nc["lo"], nc["hi"], color=c, alpha=0.12)
        ax.set_ylim(*ylim)
        ax.set_title("all families, pooled N_c", fontsize=9)
    for ax in axes[npan:]:
        ax.set_visible(False)
    for ax in axes[:npan]:
        if ax.get_subplotspec().is_last_row() or ax is axes[npan - 1]:
            ax.set_xlabel("log10 N (interval midpoint)", fontsize=8)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(f"gamma = d{d['b2']}/d{d['b1']}", fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = [], []
    for ax in axes[:npan]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab.startswith("N_c") and lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="outside upper right", ncol=len(labels), fontsize=8)
    fig.suptitle("Running coupling gamma(N) per family, N_c estimates with 95% intervals"
                 + ("" if d["nc"] else " (no /analysis/nc in file)"), fontsize=11)
    return fig


def fig_deff(res: Results) -> Figure:
    d = ex.deff_per_phase(res)
    fig, (ax,) = _new(width=5.5, height=4.2)
    rows = d["rows"]
    x = np.arange(len(rows))
    y = np.array([r["d_eff"] for r in rows])
    lo = np.array([r["lo"] for r in rows])
    hi = np.array([r["hi"] for r in rows])
    err = _yerr(y, lo, hi)
    ax.bar(x, y, color=[ex.PHASE_COLORS.get(r["phase"], "#1f77b4") for r in rows], alpha=0.8)
    ax.errorbar(x, y, yerr=err, fmt="none", ecolor="k", capsize=4, lw=1)
    ax.set_xticks(x, [r["phase"] for r in rows])
    ax.set_xlabel("phase")
    ax.set_ylabel("d_eff (participation ratio)")
    ax.set_title("Effective dimensionality per phase (95% interval)")
    return fig


def fig_width(res: Results) -> Figure:
    d = ex.width_normalisation(res)
    rows = d["rows"]
    fig, (ax,) = _new(width=max(6.0, 0.9 * len(rows) + 2), height=4.5)
    x = np.arange(len(rows))
    w = 0.27
    ax.bar(x - w, [r["r_before"] for r in rows], w, label="r before", color="#1f77b4")
    ax.bar(x, [r["r_after"] for r in rows], w, label="r after (/ d_model/d_ref)", color="#ff7f0e")
    nm = np.array([r["null_mean"] for r in rows])
    nlo = np.array([r["null_lo"] for r in rows])
    nhi = np.array([r["null_hi"] for r in rows])
    ok = np.isfinite(nm) | (np.isfinite(nlo) & np.isfinite(nhi))
    centre = np.where(np.isfinite(nm), nm, (nlo + nhi) / 2)
    yerr = _yerr(centre, nlo, nhi)
    ax.bar(x[ok] + w, centre[ok], w, color="#bbbbbb", label="permutation control (95% of null)")
    ax.errorbar(x[ok] + w, centre[ok], yerr=yerr[:, ok], fmt="none", ecolor="k", capsize=3, lw=1)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, [r["family"] for r in rows], rotation=30, ha="right")
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("family")
    ax.set_ylabel("Pearson r")
    ax.set_title("Width normalisation: before / after beside the permutation control")
    ax.legend(fontsize=8)
    return fig


def fig_dynamics(res: Results) -> Figure:
    """Left: the holdout family's scores, the ODE's prediction and the best polynomial baseline;
    right: holdout error of the ODE beside every polynomial baseline."""
    d = ex.dynamics(res)
    trajs = d["trajectories"][:1]
    fig, axes = _new(ncols=len(trajs) + (1 if d["errors"] else 0), width=6.0, height=4.6)
    k = 0
    for tr in trajs:
        ax = axes[k]
        k += 1
        A, P = np.asarray(tr["actual"], float), np.asarray(tr["predicted"], float)
        best = None
        if tr.get("baselines") and d["errors"]:
            errs = {e["label"].replace("poly deg ", "poly"): e["error"] for e in d["errors"] if e["label"].startswith("poly")}
            cands = [b for b in tr["baselines"] if b in errs and math.isfinite(errs[b])]
            best = min(cands, key=lambda b: errs[b]) if cands else None
        for j, b in enumerate(tr["benchmarks"]):
            ax.plot(tr["x"], A[:, j], "o", color=f"C{j}", label=f"{b} actual", gid=f"actual:{b}")
            ax.plot(tr["x"], P[:, j], "-", color=f"C{j}", label=f"{b} ODE", gid=f"ode:{b}")
            if best:
                ax.plot(tr["x"], np.asarray(tr["baselines"][best], float)[:, j], ":", color=f"C{j}",
                        label=f"{b} {best}" if j == 0 else f"_{b} {best}", gid=f"base:{b}")
        ax.set_xlabel("log10 N")
        ax.set_ylabel("score (%)")
        ax.set_title(tr["label"] + (f"\n(dotted: best baseline {best})" if best else ""), fontsize=9)
        ax.legend(fontsize=6.5, ncol=2)
    if d["errors"]:
        ax = axes[k]
        labels = [e["label"] for e in d["errors"]]
        vals = [e["error"] for e in d["errors"]]
        colors = ["#999999" if re.search(r"poly|baseline", lab, re.I) else "#1f77b4" for lab in labels]
        ax.barh(np.arange(len(vals)), vals, color=colors)
        ax.set_yticks(np.arange(len(vals)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("holdout error: mean|pred - actual| / mean(actual)")
        ax.set_ylabel("model")
        ax.set_title("Holdout: ODE vs polynomial baselines", fontsize=10)
    return fig


def fig_predict(res: Results) -> Figure:
    """Predicted scores at a new size: the start model's scores, the ODE with its 95% band, baselines."""
    d = ex.predictions(res)
    preds = d["predictions"][:4]
    fig, axes = _new(ncols=len(preds), width=5.6, height=4.2)
    for ax, p in zip(axes, preds):
        x = np.arange(len(p["benchmarks"]))
        ax.bar(x - 0.2, p["start"], 0.4, color="#cccccc", label="start model")
        ode, lo, hi = (np.asarray(p[k], float) for k in ("ode", "lo", "hi"))
        ax.bar(x + 0.2, ode, 0.4, color="#1f77b4", label="ODE prediction")
        ax.errorbar(x + 0.2, ode, yerr=_yerr(ode, lo, hi), fmt="none",
                    ecolor="k", capsize=3, label="95% band")
        for j, (name, vals) in enumerate(sorted(p["baselines"].items())):
            ax.plot(x + 0.2, vals, "_", ms=14, mew=2, color=f"C{j + 1}", label=name)
        ax.set_xticks(x, p["benchmarks"])
        ax.set_xlabel("benchmark")
        ax.set_ylabel("score (%)")
        ax.set_title(p["label"], fontsize=9)
        ax.legend(fontsize=7)
    return fig


def fig_frontier(res: Results) -> Figure:
    d = ex.frontier(res)
    p = d["points"]
    fig, (ax,) = _new(width=7.0, height=5.0)
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
    ax.set_xlabel(f"{d['x_name']} (%)")
    ax.set_ylabel(f"{d['y_name']} (%)")
    ax.set_title("Frontier models with the fitted line and h")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def fig_internals(res: Results, model: str) -> Figure:
    d = ex.internals(res)
    m = next((x for x in d["models"] if x["model"] == model), None)
    if m is None:
        raise Skip(f"no /internals/{model} group with layer_coupling")
    has_heads = m["head_coupling"] is not None
    fig, axes = _new(ncols=2 if has_heads else 1, width=5.6, height=4.4)
    ax = axes[0]
    L = np.arange(len(m["layer_coupling"]))
    ax.plot(L, m["layer_coupling"], "o-", ms=3, label="cos(mean R, mean T)")
    if len(m["layer_pairwise_mean"]) == len(L):
        ax.plot(L, m["layer_pairwise_mean"], "s--", ms=3, label="mean pairwise cosine")
    if len(m["layer_competing_fraction"]) == len(L):
        ax.plot(L, m["layer_competing_fraction"], ":", label="fraction < -0.5")
    ax.axhline(0, color="k", lw=0.7)
    ax.set_xlabel("layer")
    ax.set_ylabel("coupling")
    ax.set_title(f"{model}: per-layer coupling")
    ax.legend(fontsize=8)
    if has_heads:
        H = np.asarray(m["head_coupling"], float)
        ax2 = axes[1]
        lim = max(float(np.nanmax(np.abs(H))), 1e-9) if np.isfinite(H).any() else 1.0
        im = ax2.imshow(H.T, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
        fig.colorbar(im, ax=ax2, label="cos(mean R, mean T)")
        ax2.set_xlabel("layer")
        ax2.set_ylabel("head")
        from matplotlib.ticker import MaxNLocator

        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_title(f"{model}: per-head coupling")
    return fig


def fig_steering(res: Results) -> Figure:
    d = ex.steering(res)
    rows = d["rows"]
    fig, (ax,) = _new(width=6.5, height=4.5)
    for i, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
        rs = [r for r in rows if r["model"] == model]
        a = np.array([r["alpha"] for r in rs])
        y = np.array([r["rate"] for r in rs])
        lo = np.array([r["lo"] for r in rs])
        hi = np.array([r["hi"] for r in rs])
        err = _yerr(y, lo, hi)
        ax.errorbar(a + 0.01 * i, y, yerr=err, fmt="o-", capsize=4, label=model)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("alpha")
    ax.set_ylabel("intervention rate (changed outputs)")
    ax.set_title("Steering: intervention rate with Wilson 95% interval")
    ax.legend(fontsize=8)
    return fig


def fig_steering_dose(res: Results) -> Figure:
    """Held-out correction and damage rates against alpha (Wilson intervals), per model and layer;
    the chosen operating point circled."""
    d = ex.steering_dose(res)
    rows = d["rows"]
    fig, (ax,) = _new(width=6.8, height=4.6)
    series = list(dict.fromkeys((r["model"], r["layer"]) for r in rows))
    for i, (model, layer) in enumerate(series):
        rs = sorted((r for r in rows if (r["model"], r["layer"]) == (model, layer)), key=lambda r: r["alpha"])
        a = np.array([r["alpha"] for r in rs])
        for what, fmt in (("correction", "o-"), ("damage", "s--")):
            y = np.array([r[what] for r in rs], float)
            err = _yerr(y, np.array([r[f"{what}_lo"] for r in rs], float), np.array([r[f"{what}_hi"] for r in rs], float))
            ax.errorbar(a, y, yerr=err, fmt=fmt, capsize=3, color=f"C{i}", label=f"{model} L{layer}: {what}")
    for c in d["chosen"]:
        ax.plot([c["alpha"]], [c["correction"]], "o", ms=14, mfc="none", mec="k", label=f"chosen: {c['model']}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("alpha")
    ax.set_ylabel("rate (held-out items)")
    ax.set_title(f"Steering dose-response: correction and damage ({d['level']:.0%} Wilson)")
    ax.legend(fontsize=7)
    return fig


def fig_isocline(res: Results) -> Figure:
    d = ex.isocline(res)
    fig, (ax,) = _new(width=6.4, height=4.8)
    ax.plot(d["curve_x"], d["curve_y"], "k-", lw=1.3, label=f"isocline sqrt(k {d['b1']}), k = {d['k']:.3g}")
    for agrees, color, lab in ((True, "#2ca02c", "sign agrees"), (False, "#d62728", "sign disagrees")):
        rs = [r for r in d["rows"] if r["agrees"] == agrees]
        ax.scatter([r["b1_mid"] for r in rs], [r["b2_mid"] for r in rs], c=color, s=26, edgecolors="k",
                   linewidths=0.4, label=f"{lab} ({len(rs)})")
    ax.set_xlabel(f"{d['b1']} interval midpoint (fraction)")
    ax.set_ylabel(f"{d['b2']} interval midpoint (fraction)")
    ax.set_title(f"Isocline (rule {d['rule']}, calibration {d['calibration']}): "
                 f"{d['total_agree']}/{d['total_intervals']} agree", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def fig_hfield(res: Results) -> Figure:
    d = ex.hfield(res)
    rows = d["rows"]
    fig, (ax,) = _new(width=max(5.5, 0.45 * len(rows) + 2), height=4.4)
    x = np.arange(len(rows))
    y = np.array([r["mean_h"] for r in rows])
    ax.bar(x, y, yerr=np.nan_to_num([r["std_h"] for r in rows]), capsize=3,
           color=["#2ca02c" if v > 0 else "#d62728" for v in y])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, [r["group"] for r in rows], rotation=45, ha="right", fontsize=8)
    ax.set_xlabel(d["group_by"])
    ax.set_ylabel("mean h (points; +- std)")
    ax.set_title(f"Residual field h against {d['b2']} = {d['beta1']:.3g} {d['b1']} + {d['beta0']:.3g}", fontsize=10)
    return fig


def fig_loss(res: Results) -> Figure:
    d = ex.loss_law(res)
    fig, (ax,) = _new(width=6.0, height=4.4)
    ax.plot(d["params"], d["val_loss"], "o", label="validation loss")
    if len(d["fitted"]) == len(d["params"]):
        order = np.argsort(d["params"])
        ax.plot(np.asarray(d["params"])[order], np.asarray(d["fitted"])[order], "-",
                label=f"L = {d['E']:.3g} + {d['A']:.3g} N^-{d['alpha']:.3g}  (R^2 {d['r2']:.3f})")
    ax.set_xscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("validation loss")
    ax.set_title("Loss law", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def fig_eigen(res: Results) -> Figure:
    d = ex.eigen(res)
    fig, (ax,) = _new(width=6.4, height=4.4)
    x = [r["log10_n"] for r in d["rows"]]
    ax.plot(x, [r["lambda1"] for r in d["rows"]], "o-", label="lambda1")
    ax.plot(x, [r["lambda2"] for r in d["rows"]], "s-", label=f"lambda2 (~N^{d['power_exponent']:.2g})")
    ax.set_xlabel("log10 N (largest model of the window)")
    ax.set_ylabel("eigenvalue")
    ax2 = ax.twinx()
    ax2.plot(x, [r["e2_angle_deg"] for r in d["rows"]], ":", color="0.4", label="e2 angle")
    ax2.set_ylabel("e2 rotation (degrees)")
    ax.set_title(f"Eigen-geometry: {d['family']} ({d['mode']} windows, {d['matrix']})", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    return fig


@dataclass
class FigureOutcome:
    name: str
    figure: Figure | None
    note: str = ""


FIGURES: dict[str, Callable[[Results], Figure]] = {
    "phase_diagram": fig_phase_diagram,
    "running_gamma": fig_running_gamma,
    "deff": fig_deff,
    "width": fig_width,
    "dynamics": fig_dynamics,
    "predict": fig_predict,
    "frontier": fig_frontier,
    "steering": fig_steering,
    "steering_dose": fig_steering_dose,
    "isocline": fig_isocline,
    "hfield": fig_hfield,
    "loss": fig_loss,
    "eigen": fig_eigen,
}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def build_figures(res: Results) -> list[FigureOutcome]:
    """Every figure the file has data for; the others as skip notes naming the missing group."""
    out: list[FigureOutcome] = []
    for name, fn in FIGURES.items():
        try:
            out.append(FigureOutcome(name, fn(res)))
        except Skip as exc:
            out.append(FigureOutcome(name, None, str(exc)))
    try:
        models = [m["model"] for m in ex.internals(res)["models"]]
    except Skip as exc:
        out.append(FigureOutcome("internals", None, str(exc)))
    else:
        for m in models:
            out.append(FigureOutcome(f"internals_{_safe(m)}", fig_internals(res, m)))
    from cape_hpc.report.crossmodel_figures import build_figures as crossmodel_figures

    out += crossmodel_figures(res)
    return out


def close(fig: Figure) -> None:
    plt.close(fig)
