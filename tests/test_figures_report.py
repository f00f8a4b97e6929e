"""Figures from a small results file written by the real library code (tests/report_fixture.py).

Each figure's axes and series are checked on the matplotlib objects against independent references:
the shipped score table (CSV values), numpy fits and hand computations, and the values stored in the
file read back raw (``read_results``), not through the report's typed readers.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.image import AxesImage

from cape_hpc.io.scores import load_frontier, load_scores
from cape_hpc.io.store import read_results
from cape_hpc.report import figures as F
from cape_hpc.report.data import Results
from report_fixture import (CROSSMODEL_GROUP, CROSSMODEL_LADDERS, DYNAMICS_GROUP, PREDICT_GROUP, SAMPLE_FAMILIES,
                            STEER_ALPHAS, cape, cached_sample)


@pytest.fixture(scope="module")
def sample():
    return Results.load(cached_sample())


@pytest.fixture(scope="module")
def scores():
    df = load_scores()
    return df.loc[df["family"].isin(SAMPLE_FAMILIES)]


def _lines(ax, prefix=""):
    return [ln for ln in ax.get_lines() if (ln.get_gid() or "").startswith(prefix)] if prefix else ax.get_lines()


def test_phase_diagram_points_are_the_table_scores(sample, scores):
    fig = F.draw("phase_diagram", sample)
    (ax,) = fig.axes
    assert ax.get_xlabel().startswith("HS") and ax.get_ylabel().startswith("TQA")
    traj = _lines(ax, "traj:")
    fams = sorted(set(scores["family"]))
    assert sorted(ln.get_gid()[5:] for ln in traj) == fams
    for ln in traj:
        fam = ln.get_gid()[5:]
        ref = scores.loc[scores["family"] == fam].sort_values(["params", "model"])
        np.testing.assert_allclose(ln.get_xdata(), ref["HS"].to_numpy(float), atol=1e-9)
        np.testing.assert_allclose(ln.get_ydata(), ref["TQA"].to_numpy(float), atol=1e-9)
    scat = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scat) == len(fams)
    assert sum(len(c.get_offsets()) for c in scat) == len(scores)
    # coloured by phase: the smallest of each family has no phase, the others one of three colours
    colours = np.vstack([c.get_facecolors() for c in scat])
    assert len({tuple(np.round(c, 3)) for c in colours}) >= 3


def test_running_gamma_series_and_nc_lines(sample, scores):
    fig = F.draw("running_gamma", sample)
    lines = [ln for ax in fig.axes for ln in ax.get_lines()]
    gam = {ln.get_gid()[6:]: ln for ln in lines if (ln.get_gid() or "").startswith("gamma:")}
    assert set(gam) == set(scores["family"])
    assert any(ax.get_xlabel() == "log10 N (interval midpoint)" for ax in fig.axes)
    assert any("gamma" in ax.get_ylabel() for ax in fig.axes)
    for fam, ln in gam.items():
        assert ln.axes.get_title() == fam
        # gamma by hand from the table: dTQA / dHS between consecutive sizes, NaN when |dHS| < 0.5
        ref = scores.loc[scores["family"] == fam].sort_values(["params", "model"])
        hs, tqa, n = ref["HS"].to_numpy(float), ref["TQA"].to_numpy(float), ref["params"].to_numpy(float)
        g = np.diff(tqa) / np.diff(hs)
        g[np.abs(np.diff(hs)) < 0.5] = np.nan
        np.testing.assert_allclose(ln.get_ydata(), g, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(ln.get_xdata(), (np.log10(n[1:]) + np.log10(n[:-1])) / 2, rtol=1e-12)
    stored = [e for g in read_results(sample.path, "/analysis/nc").values() for e in g["estimates"]]
    valid = {(e["scope"], e["estimator"]): e["log10_nc"] for e in stored
             if e["log10_nc"] is not None and math.isfinite(e["log10_nc"])}
    nc_lines = {tuple(ln.get_gid().split(":")[1:]): ln.get_xdata()[0] for ln in lines
                if (ln.get_gid() or "").startswith("nc:")}
    assert len(valid) > 0 and nc_lines == pytest.approx(valid)


def test_deff_bars_and_intervals(sample):
    fig = F.draw("deff", sample)
    (ax,) = fig.axes
    assert ax.get_ylabel().startswith("d_eff") and ax.get_xlabel() == "phase"
    groups = read_results(sample.path, "/analysis/deff")["groups"]
    bars = ax.patches
    assert len(bars) == len(groups)
    assert [b.get_height() for b in bars] == pytest.approx([g["d_eff"] for g in groups], nan_ok=True)
    assert [t.get_text() for t in ax.get_xticklabels()] == [g["group"] for g in groups]
    # d_eff of the 'all' group recomputed by hand: participation ratio of the covariance eigenvalues
    df = load_scores()
    df = df.loc[df["family"].isin(SAMPLE_FAMILIES)]
    (allg,) = [g for g in groups if g["group"] == "all"]
    X = df[["HS", "TQA", "ARC", "WG", "MMLU"]].dropna().to_numpy(float)
    assert allg["n_models"] == len(X)
    lam = np.linalg.eigvalsh(np.cov(X, rowvar=False))
    assert allg["d_eff"] == pytest.approx(lam.sum() ** 2 / (lam ** 2).sum(), rel=1e-9)


def test_width_before_after_and_control(sample, scores):
    fig = F.draw("width", sample)
    (ax,) = fig.axes
    assert ax.get_ylabel() == "Pearson r"
    labels = [c.get_label() for c in ax.containers]
    assert any("before" in lab for lab in labels) and any("after" in lab for lab in labels)
    assert any("permutation" in lab for lab in labels)
    fams = [t.get_text() for t in ax.get_xticklabels()]
    before = next(c for c in ax.containers if "before" in c.get_label())
    for fam, bar in zip(fams, before.patches):
        ref = scores.loc[scores["family"] == fam].dropna(subset=["HS", "TQA"])
        if len(ref) >= 3:
            r = np.corrcoef(ref["HS"], ref["TQA"])[0, 1]
            assert bar.get_height() == pytest.approx(r, abs=1e-9)


def test_frontier_scatter_fit_and_h(sample):
    fig = F.draw("frontier", sample)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("SWE") and ax.get_ylabel().startswith("GPQA")
    fr = load_frontier()
    scat = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scat) == 1 and len(scat[0].get_offsets()) == len(fr.dropna(subset=["SWE", "GPQA"]))
    main = fr.loc[fr["cohort"] == "main"].dropna(subset=["SWE", "GPQA"])
    slope, intercept = np.polyfit(main["SWE"], main["GPQA"], 1)
    (fit,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("fit")]
    x, y = fit.get_xdata(), fit.get_ydata()
    assert (y[-1] - y[0]) / (x[-1] - x[0]) == pytest.approx(slope, rel=1e-9)
    assert y[0] == pytest.approx(slope * x[0] + intercept, rel=1e-9)
    assert any("h" in a.get_ylabel() for a in fig.axes[1:])  # the colour bar says h


def test_internals_layer_curve_and_head_map(sample):
    for model in STEER_ALPHAS:
        fig = dict(F.draw("internals", sample))[f"internals_{model}"]
        ax, ax2 = fig.axes[:2]
        g = read_results(sample.path, f"/internals/{model}")
        assert ax.get_xlabel() == "layer" and ax2.get_ylabel() == "head"
        layers = sorted(g["layers"], key=lambda r: r["layer"])
        assert len(layers) == g["n_layers"]
        np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [r["coupling"] for r in layers])
        np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [r["pairwise_mean"] for r in layers])
        assert len([ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]) == 3
        (im,) = [a for a in ax2.get_children() if isinstance(a, AxesImage)]
        H = np.full((g["n_layers"], g["n_heads"]), np.nan)
        for r in g["heads"]:
            H[r["layer"], r["head"]] = r["coupling"]
        assert np.isfinite(H).all()  # every (layer, head) was measured
        np.testing.assert_allclose(im.get_array(), H.T)


def _wilson(k, n, z=1.959963984540054):
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return c - h, c + h


def test_steering_rates_with_intervals(sample):
    fig = F.draw("steering", sample)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "alpha" and "intervention rate" in ax.get_ylabel()
    assert len(ax.containers) == len(STEER_ALPHAS)  # one errorbar series per model
    for model, alphas in STEER_ALPHAS.items():
        runs = read_results(sample.path, f"/steering/{model}")
        runs = sorted((r for r in runs.values() if r["_schema"] == "SteeringResult"), key=lambda r: r["alpha"])
        assert [r["alpha"] for r in runs] == list(alphas)
        cont = next(c for c in ax.containers if c.get_label() == model)
        y = cont.lines[0].get_ydata()
        np.testing.assert_allclose(y, [r["n_changed"] / r["n_prompts"] for r in runs])
        assert [r["n_changed"] for r in runs] == [sum(p["changed"] for p in r["per_prompt"]) for r in runs]
        # the drawn interval is the Wilson interval of n_changed / n_prompts, recomputed here
        (bars,) = cont.lines[2]
        segs = np.array([s[:, 1] for s in bars.get_segments()])
        ref = np.array([_wilson(r["n_changed"], r["n_prompts"]) for r in runs])
        np.testing.assert_allclose(np.sort(segs, axis=1), ref, atol=1e-9)
    llama0 = sorted((r for r in read_results(sample.path, "/steering/tiny-llama").values()
                     if r["_schema"] == "SteeringResult"), key=lambda r: r["alpha"])[0]
    assert llama0["alpha"] == 0 and llama0["n_changed"] == 0  # alpha = 0 changes nothing


def test_dynamics_holdout_and_baselines(sample):
    fig = F.draw("dynamics", sample)
    ax, ax2 = fig.axes
    assert ax.get_xlabel() == "log10 N" and "holdout" in ax.get_title()
    opt = load_scores().query("family == 'OPT'").sort_values("params")
    x = np.log10(opt["params"].to_numpy(float))[1:]  # sizes after the start model
    for b in ("HS", "TQA", "ARC", "WG", "MMLU"):
        (act,) = [ln for ln in ax.get_lines() if ln.get_gid() == f"actual:{b}"]
        np.testing.assert_allclose(act.get_xdata(), x, rtol=1e-12)
        np.testing.assert_allclose(act.get_ydata(), opt[b].to_numpy(float)[1:], rtol=1e-12)
        assert [ln for ln in ax.get_lines() if ln.get_gid() == f"ode:{b}"]
    # holdout errors: the ODE and the polynomial baselines of degree 1..4, as stored
    stored = read_results(sample.path, DYNAMICS_GROUP)
    labels = [t.get_text() for t in ax2.get_yticklabels()]
    assert labels == ["ODE (linear)"] + [f"poly deg {b['degree']}" for b in stored["baselines"]]
    assert [p.get_width() for p in ax2.patches] == pytest.approx(
        [stored["holdout_error"]["rel_mae"]] + [b["rel_mae"] for b in stored["baselines"]])
    # the polynomial baseline of degree 1 recomputed: polyfit on the training family (Pythia)
    py = load_scores().query("family == 'Pythia'")
    coef = np.polyfit(np.log10(py["params"]), py["HS"], 1)
    pred = np.polyval(coef, x)
    rows = sorted((r for r in stored["predictions"] if r["benchmark"] == "HS" and r["predictor"] == "poly1"),
                  key=lambda r: r["log10_n"])
    np.testing.assert_allclose([r["predicted"] for r in rows], pred, rtol=1e-9)
    # the dotted line is the best baseline (lowest holdout error), drawn from those stored rows
    best = min(stored["baselines"], key=lambda b: b["rel_mae"])
    (dotted,) = [ln for ln in ax.get_lines() if ln.get_gid() == "base:HS"]
    best_rows = sorted((r for r in stored["predictions"] if r["benchmark"] == "HS"
                        and r["predictor"] == f"poly{best['degree']}"), key=lambda r: r["log10_n"])
    np.testing.assert_allclose(dotted.get_ydata(), [r["predicted"] for r in best_rows], rtol=1e-12)


def test_isocline_points_and_curve(sample):
    fig = F.draw("isocline", sample)
    (ax,) = fig.axes
    g = read_results(sample.path, "/analysis/isocline")
    (curve,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("isocline")]
    np.testing.assert_allclose(curve.get_ydata(), np.sqrt(g["k"] * curve.get_xdata()))
    # k from the OLMo pair by hand: B2*^2 / B1* with the means of its HS and TQA as fractions
    olmo = load_scores().query("family == 'OLMo'")
    assert g["k"] == pytest.approx((olmo["TQA"].mean() / 100) ** 2 / (olmo["HS"].mean() / 100), rel=1e-12)
    pts = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in pts) == len(g["intervals"]) == g["total_intervals"]
    agree = next(c for c in pts if c.get_label().startswith("sign agrees"))
    assert len(agree.get_offsets()) == g["total_agree"]


def test_hfield_bars_are_family_mean_residuals(sample):
    fig = F.draw("hfield", sample)
    (ax,) = fig.axes
    d = load_scores().dropna(subset=["HS", "TQA"])  # cape analyze fits h on the whole table
    slope, intercept = np.polyfit(d["HS"], d["TQA"], 1)
    h = d["TQA"] - (slope * d["HS"] + intercept)
    fams = [t.get_text() for t in ax.get_xticklabels()]
    assert sorted(fams) == sorted(set(d["family"]))
    for fam, bar in zip(fams, ax.patches):
        assert bar.get_height() == pytest.approx(h[d["family"] == fam].mean(), abs=1e-9)


def test_loss_and_eigen_figures(sample):
    from cape_hpc.io.scores import load_loss

    ax = F.draw("loss", sample).axes[0]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "validation loss"
    loss = load_loss()
    pts = ax.get_lines()[0]
    np.testing.assert_allclose(sorted(pts.get_xdata()), sorted(loss["params"].to_numpy(float)))
    ax = F.draw("eigen", sample).axes[0]
    g = read_results(sample.path, "/analysis/eigen")
    lam1 = ax.get_lines()[0].get_ydata()
    assert len(lam1) == len(g["windows"])
    # the last cumulative window is every Pythia model: lambda1 of their correlation matrix
    py = load_scores().query("family == 'Pythia'")[["HS", "TQA", "ARC", "WG", "MMLU"]].dropna()
    assert g["family"] == "Pythia" and g["mode"] == "cumulative" and g["windows"][-1]["n_models"] == len(py)
    assert lam1[-1] == pytest.approx(np.linalg.eigvalsh(np.corrcoef(py.to_numpy(float), rowvar=False))[-1])


def test_predict_bars_band_and_baselines(sample):
    fig = F.draw("predict", sample)
    (ax,) = fig.axes
    g = read_results(sample.path, PREDICT_GROUP)
    assert [t.get_text() for t in ax.get_xticklabels()] == g["benchmarks"]
    start = load_scores().query("model == @g['start_model']")
    assert g["start_model"] == "Pythia-12B"  # the largest Pythia below 3e10
    bars = ax.patches
    n = len(g["benchmarks"])
    assert [b.get_height() for b in bars[:n]] == pytest.approx([float(start[b].iloc[0]) for b in g["benchmarks"]])
    assert [b.get_height() for b in bars[n:2 * n]] == pytest.approx(g["ode"])
    assert {ln.get_label() for ln in ax.get_lines()} >= set(g["baselines"])


def test_build_figures_skips_say_why(sample, tmp_path):
    outcomes = {o.name: o for o in F.build_figures(sample)}
    for name in ("phase_diagram", "running_gamma", "deff", "width", "dynamics", "frontier", "steering",
                 "isocline", "hfield", "loss", "eigen", "predict", *(f"internals_{m}" for m in STEER_ALPHAS)):
        assert outcomes[name].figure is not None, outcomes[name].note
    # a file with only the coupling: everything else is skipped with the missing group named
    only = tmp_path / "only.h5"
    cape("coupling", "--out", str(only))
    outs = {o.name: o for o in F.build_figures(Results.load(only))}
    assert outs["phase_diagram"].figure is not None and outs["running_gamma"].figure is not None
    assert "/analysis/deff" in outs["deff"].note
    assert "/analysis/width" in outs["width"].note
    assert "/analysis/frontier" in outs["frontier"].note
    assert "/internals" in outs["internals"].note
    assert "/steering" in outs["steering"].note
    assert "/dynamics" in outs["dynamics"].note


def test_cli_figures_writes_png_and_svg(sample, tmp_path, capsys):
    from cape_hpc.cli import main

    out = tmp_path / "figs"
    assert main(["figures", sample.path, "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "skipped" not in text
    for name in ("dynamics", "phase_diagram", "running_gamma", "deff", "width", "frontier", "steering", "internals_tiny-llama"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (out / f"{name}.svg").read_bytes()[:2000]


def test_cli_missing_file_is_one_line_error(tmp_path, capsys):
    from cape_hpc.cli import main

    assert main(["figures", str(tmp_path / "nope.h5"), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.h5" in err[0]


def test_cli_report_json(sample, tmp_path, capsys):
    from cape_hpc.cli import main

    out = tmp_path / "r" / "report.html"
    assert main(["report", sample.path, "-o", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == str(out.resolve()) and out.stat().st_size == info["bytes"]
    assert info["skipped"] == [] and info["diagnose"] == "/analysis/diagnose_model"
    assert "Phase diagram" in info["charts"] and "Steering intervention rate" in info["charts"]
    assert main(["report", sample.path, "-o", str(out), "--force"]) == 0   # the same file again
    assert capsys.readouterr().out.strip().endswith(f"report: {out.resolve()}")


def test_demo_like_commands_draw_every_chart(tmp_path):
    """The commands of `make demo` (smaller counts, a tiny model) into one file: `cape report` and
    `cape figures` draw every chart from it, nothing skipped."""
    h5 = str(tmp_path / "demo.h5")
    cape("analyze", "--n-resamples", "50", "--n-permutations", "50", "--out", h5)
    for model in ("tiny-llama", "tiny-phi", "tiny-bloom"):  # jobs/family_tiny.yaml's family of three sizes
        cape("internals", "--model", model, "--max-prompts", "8", "--batch-size", "8", "--out", h5)
    cape("crossmodel", h5, "--job", "jobs/family_tiny.yaml", "--scores", "none", "-n", "50", "--out", h5)
    cape("steer", "--model", "tiny-llama", "--max-prompts", "4", "--max-new-tokens", "3", "--out", h5)
    cape("dynamics", "--train", "Pythia", "--holdout", "OPT", "--model", "linear", "--n-resamples", "10", "--out", h5)
    cape("predict", "--family", "Pythia", "--size", "30B", "--model", "linear", "--n-resamples", "10", "--out", h5)
    cape("reproduce", "--claim", "pythia-r-hs-tqa,loss-invariant", "--n-resamples", "20", "--out", h5)
    info = json.loads(cape("report", h5, "-o", str(tmp_path / "r.html"), "--json"))
    assert info["skipped"] == [] and info["diagnose"] == "/analysis/diagnose_model"
    assert len(info["charts"]) >= 15
    figs = json.loads(cape("figures", h5, "-o", str(tmp_path / "figs"), "--format", "png", "--json"))
    assert figs["skipped"] == []
    names = {Path(p).stem for p in figs["written"]}
    assert names >= (set(F.FIGURES) - {"internals"}) | {"internals_tiny-llama", "crossmodel_ladders"}
    assert "Cross-model: internal coupling ladder per family" in info["charts"]


# ------------------------------------------------------------------------------------------------
# cross-model figures and charts (docs/METHODS.md §3.10): the /crossmodel group of the sample is a
# real CrossModelResult of synthetic internals of shipped-table models (tests/report_fixture.py)


@pytest.fixture(scope="module")
def crossmodel(sample):
    return read_results(sample.path, CROSSMODEL_GROUP)


def _internals_groups(sample):
    tree = read_results(sample.path, "/internals")
    return {k.replace("|", "/"): v for k, v in tree.items()}


def test_crossmodel_ladder_per_family_with_intervals(sample, crossmodel):
    fig = F.draw("crossmodel_ladders", sample)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "log10 N (parameters)" and "final" in ax.get_ylabel()
    df = load_scores().set_index("model")
    fams = {}
    for m in CROSSMODEL_LADDERS:
        fams.setdefault(df.loc[m, "family"], []).append(m)
    conts = {c.get_label().split(" (")[0]: c for c in ax.containers}   # one errorbar container per family
    lines = {f: c.lines[0] for f, c in conts.items()}
    xs = {f: np.asarray(ln.get_xdata(), float) for f, ln in lines.items()}
    ys = {f: np.asarray(ln.get_ydata(), float) for f, ln in lines.items()}
    labels = {f: c.get_label() for f, c in conts.items()}
    assert set(lines) == set(fams) == {"Pythia", "OPT", "Qwen2.5"}
    for fam, models in fams.items():
        models = sorted(models, key=lambda m: df.loc[m, "params"])
        # x: log10 N of the shipped table; y: the requested last-layer coupling (synthetic, noise 0.02)
        np.testing.assert_allclose(xs[fam], np.log10(df.loc[models, "params"].to_numpy(float)))
        np.testing.assert_allclose(ys[fam], [CROSSMODEL_LADDERS[m][1] for m in models], atol=0.03)
        lad = next(l for l in crossmodel["ladders"] if l["family"] == fam)
        np.testing.assert_allclose(ys[fam], lad["coupling"])
        if len(models) >= 3:  # the slope in the legend is the least-squares slope of the points drawn
            slope = np.polyfit(xs[fam], ys[fam], 1)[0]
            assert f"{slope:.3g}/decade" in labels[fam]
        else:
            assert "slope" not in labels[fam] and "< 3" in lad["reason"]
        # the error bars: the block-bootstrap bounds stored per model
        (bar,) = conts[fam].lines[2]
        segs = bar.get_segments()
        np.testing.assert_allclose([s[0][1] for s in segs], lad["coupling_low"])
        np.testing.assert_allclose([s[1][1] for s in segs], lad["coupling_high"])
        assert all(lo <= y <= hi for lo, y, hi in zip(lad["coupling_low"], lad["coupling"], lad["coupling_high"]))


def test_crossmodel_layer_curves_on_relative_depth_and_drep(sample):
    groups = _internals_groups(sample)
    assert len(groups) >= 2
    for fig, key in ((F.draw("crossmodel_depth", sample), "coupling"), (F.draw("crossmodel_drep", sample), "d_rep")):
        ax = fig.axes[0]
        assert ax.get_xlabel().startswith("relative depth")
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        assert set(lines) == set(groups)
        for model, g in groups.items():
            layers = sorted(g["layers"], key=lambda r: r["layer"])
            L = len(layers)
            np.testing.assert_allclose(lines[model].get_xdata(), np.arange(L) / (L - 1))
            np.testing.assert_allclose(lines[model].get_ydata(), [r[key] for r in layers])


def test_crossmodel_bottleneck_curves(sample):
    groups = {m: g for m, g in _internals_groups(sample).items() if g["bottleneck"]["measured"]}
    assert groups
    ax = F.draw("crossmodel_bottleneck", sample).axes[0]
    assert ax.get_xscale() == "log"
    curves = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
    assert len(curves) == len(groups)
    for ln, (model, g) in zip(curves, groups.items()):
        b = g["bottleneck"]
        assert ln.get_label().startswith(model) and f"hidden {b['hidden']:.3f}" in ln.get_label()
        np.testing.assert_allclose(ln.get_xdata(), [r["k"] for r in b["pca"]])
        np.testing.assert_allclose(ln.get_ydata(), [r["coupling"] for r in b["pca"]])


def test_crossmodel_charts_and_phase_table(sample, crossmodel):
    from cape_hpc.report.html import build_charts

    charts, skipped = build_charts(sample)
    assert skipped == []
    by = {c["title"]: (c["spec"], c["table"]) for c in charts if c["title"].startswith("Cross-model")}
    assert set(by) == {"Cross-model: internal coupling ladder per family",
                       "Cross-model: per-layer coupling on a relative depth axis", "Cross-model: d_rep profiles",
                       "Cross-model: projection bottleneck curves", "Cross-model: internal vs benchmark phase"}
    spec, data = by["Cross-model: internal coupling ladder per family"]
    assert [t["name"] for t in spec["data"]] == [l["family"] for l in crossmodel["ladders"] if l["x"]]
    for t, lad in zip(spec["data"], crossmodel["ladders"]):
        assert t["x"] == pytest.approx(lad["x"]) and t["y"] == pytest.approx(lad["coupling"])
        assert t["error_y"]["array"] == pytest.approx(np.subtract(lad["coupling_high"], lad["coupling"]))
    # the phase table: one row per stored PhaseRow; the benchmark phase recomputed from the table by hand
    spec, data = by["Cross-model: internal vs benchmark phase"]
    (table,) = spec["data"]
    cols = table["header"]["values"]
    cells = dict(zip(cols, table["cells"]["values"]))
    assert cells["model"] == [p["model"] for p in crossmodel["phases"]]
    assert cells["agree"] == [bool(p["agree"]) for p in crossmodel["phases"]]
    k, n = crossmodel["phase_agreement"]["n_agree"], crossmodel["phase_agreement"]["n_both"]
    assert f"({k} of {n} agree)" in spec["layout"]["title"]["text"] and n >= 5
    df = load_scores()
    for p in crossmodel["phases"]:
        fam = df[df.family == p["family"]].sort_values(["params", "model"])
        i = list(fam.model).index(p["model"])
        if i == 0:
            assert p["benchmark_phase"] == ""
            continue
        g = (fam.TQA.iloc[i] - fam.TQA.iloc[i - 1]) / (fam.HS.iloc[i] - fam.HS.iloc[i - 1])
        assert p["benchmark_gamma"] == pytest.approx(g)
        assert p["benchmark_phase"] == ("tax" if g < -0.1 else "bonus" if g > 0.1 else "transition")
        assert p["agree"] == (p["internal_phase"] == p["benchmark_phase"] != "")


# --------------------------------------------------------------------------- one report of one study

@pytest.mark.parametrize("n, dtick", [(1, 1), (12, 1), (13, 2), (24, 2), (25, 5), (30, 5), (60, 5), (61, 10),
                                      (120, 10), (121, 20)])
def test_axis_dtick_gives_at_most_twelve_ticks(n, dtick):
    from cape_hpc.report.style import axis_dtick

    assert axis_dtick(n) == dtick           # hand computation: the first of 1, 2, 5, 10, 20 with n / step <= 12


def test_thirty_layer_model_axis_is_readable():
    """A 30-layer model's layer chart and head map tick every 5th layer (6 ticks), not all 30."""
    from crossmodel_fixture import synthetic_internals

    from cape_hpc.report.registry import spec

    res, _ = synthetic_internals("deep-30", np.linspace(0.9, -0.2, 30), head_coupling=np.zeros((30, 2)), seed=3)
    cards = spec("internals").cards(spec("internals").extract(Results("deep.h5", {}, stored={res.group: res})))
    assert [c.model for c in cards] == ["deep-30", "deep-30"]
    assert [c.spec["layout"]["xaxis"]["dtick"] for c in cards] == [5, 5]
    assert len(cards[0].spec["data"][0]["x"]) == 30


def test_report_of_several_files_is_one_report(tmp_path):
    """`cape report ANALYSIS.h5 SWEEP.h5`: one page with every chart of both files (the same charts as
    the one-file sample), the answers marked, the per-model cards named; a group stored twice is the
    first file's and listed; a missing file is one line naming it (exit 2)."""
    from report_fixture import split_sample

    from cape_hpc.cli import main
    from cape_hpc.io.store import write_results
    from cape_hpc.report.html import build_charts

    a, b = split_sample(tmp_path)
    one, _ = build_charts(Results.load(cached_sample()))
    info = json.loads(cape("report", str(a), str(b), "-o", str(tmp_path / "study.html"), "--json"))
    assert info["charts"] == [c["title"] for c in one] and info["skipped"] == []
    both = Results.load_many([a, b])
    assert set(both.stored) == set(Results.load(a).stored) | set(Results.load(b).stored)
    charts, _ = build_charts(both)
    answers = {c["title"] for c in charts if c["section"] == "answers"}
    assert answers == {"Phase diagram", "Running coupling and N_c", "Cross-model: internal coupling ladder per family",
                       "Cross-model: internal vs benchmark phase"}
    assert {c["model"] for c in charts if c["section"] == "models"} == set(STEER_ALPHAS)
    # a third file with a second /analysis/coupling: the first file's is shown, the copy listed
    c = write_results(tmp_path / "again.h5", {"/analysis/coupling": both.stored["/analysis/coupling"]}, force=True)
    info = json.loads(cape("report", str(a), str(b), str(c), "-o", str(tmp_path / "s2.html"), "--json"))
    assert [s["chart"] for s in info["skipped"]] == [f"/analysis/coupling of {c}"]
    assert main(["report", str(a), str(tmp_path / "missing.h5"), "-o", str(tmp_path / "s3.html")]) == 2
    assert not (tmp_path / "s3.html").exists()


def test_answers_nc_rows_and_verdicts_are_the_stored_values(sample):
    """The answers' N_c table: one row per stored estimate (benchmark-level and internal) with the
    stored log10 N_c and its 95% bootstrap interval (raw file values); the verdict counts are the audit's."""
    from cape_hpc.report.answers import answers

    out = answers(sample)
    rows = [dict(zip(out["nc"]["columns"], r)) for r in out["nc"]["rows"]]
    raw = read_results(sample.path, "/analysis/nc")
    cm = read_results(sample.path, CROSSMODEL_GROUP)
    want = [(f"/analysis/nc/{k}", e) for k, g in raw.items() for e in g["estimates"]]
    want += [(CROSSMODEL_GROUP, e) for e in cm["nc"]]
    assert len(rows) == len(want) > 0
    for r, (src, e) in zip(sorted(rows, key=lambda r: (r["source"], r["family"], r["estimator"])),
                           sorted(want, key=lambda w: (w[0], w[1].get("scope", w[1].get("family")), w[1]["estimator"]))):
        assert r["source"] == src and r["estimator"] == e["estimator"] and r["models"] == e["n_models"]
        v = e["log10_nc"]
        assert (r["log10 N_c"] is None) if not math.isfinite(v) else r["log10 N_c"] == pytest.approx(v)
        ci = [c for c in e["bootstrap"]["intervals"] if abs(c["level"] - 0.95) < 1e-12]
        if ci and math.isfinite(ci[0]["low"]):
            assert r["95% low"] == pytest.approx(ci[0]["low"]) and r["95% high"] == pytest.approx(ci[0]["high"])
    audit = read_results(sample.path, "/reproduce")
    assert out["verdicts"] == {k: v for k, v in audit["counts"].items()}
