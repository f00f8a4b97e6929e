"""h-field, isocline, loss law, fixed point, eigen-geometry, frontier and diagnose against
independent computations (numpy.polyfit / eigh / lstsq, scipy curve_fit / pearsonr, direct loops)."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.optimize import curve_fit

from cape_hpc.analysis.coupling import local_coupling
from cape_hpc.analysis.diagnose import DiagnoseModel, diagnose_point, fit_diagnose_model
from cape_hpc.analysis.eigen import eigen_geometry
from cape_hpc.analysis.fixedpoint import coupling_fixed_point, fixed_point_xy
from cape_hpc.analysis.frontier import frontier_fit
from cape_hpc.analysis.hfield import h_field
from cape_hpc.analysis.isocline import isocline
from cape_hpc.analysis.losslaw import loss_law
from cape_hpc.errors import OptionError
from cape_hpc.io.scores import SCORE_COLUMNS, load_frontier, load_loss, load_scores
from cape_hpc.io.store import read_results, write_results


def test_hfield_against_polyfit():
    df = load_scores()
    r = h_field(df)
    s, c = np.polyfit(df.HS, df.TQA, 1)
    assert (r.beta1, r.beta0) == pytest.approx((s, c), rel=1e-10)
    h = np.array([m.h for m in r.models])
    np.testing.assert_allclose(h, df.TQA - (s * df.HS + c), atol=1e-10)
    assert abs(h.sum()) < 1e-9
    py = next(g for g in r.groups if g.group == "Pythia")
    assert py.count == 8 and py.mean_h == pytest.approx(h[(df.family == "Pythia").to_numpy()].mean())
    fr = h_field(df, units="fraction")
    assert fr.beta0 == pytest.approx(c / 100) and fr.models[0].h == pytest.approx(r.models[0].h / 100)
    with pytest.raises(OptionError, match="group_by"):
        h_field(df, group_by="lab")


def test_isocline_k_by_hand_and_both_rules():
    df = load_scores()
    r = isocline(df)
    # OLMo-1B (63.5, 36.4), OLMo-7B (78.0, 35.7): B1* = 0.7075, B2* = 0.3605, k = 0.3605^2 / 0.7075
    assert r.b1_star == pytest.approx(0.7075) and r.b2_star == pytest.approx(0.3605)
    assert r.k == pytest.approx(0.3605 ** 2 / 0.7075)
    iv = next(i for i in r.intervals if i.model == "BLOOM-1.1B")
    # midpoint (0.39965, 0.4212); isocline there sqrt(k * 0.39965) = 0.27095 < 0.4212: above -> predicts +
    assert iv.b1_mid == pytest.approx((37.15 + 42.78) / 200) and iv.side == "above" and iv.predicted_sign == 1
    assert iv.b2_isocline == pytest.approx(math.sqrt(r.k * (37.15 + 42.78) / 200))
    assert iv.gamma < 0 and not iv.agrees
    neg = isocline(df, rule="above-negative")
    assert [i.side for i in neg.intervals] == [i.side for i in r.intervals]
    assert all(a.predicted_sign == -b.predicted_sign for a, b in zip(neg.intervals, r.intervals))
    nonzero = sum(1 for i in r.intervals if i.gamma != 0)
    assert r.total_agree + neg.total_agree == nonzero
    fam = {f.family: (f.n_agree, f.n_intervals) for f in neg.families}
    assert fam["OPT"] == (6, 7) and fam["BLOOM"] == (4, 5) and fam["Cerebras-GPT"] == (5, 6)
    ex = isocline(df, exclude_calibration=True)
    assert "OLMo" not in {f.family for f in ex.families}
    assert isocline(df, calibration=0.2).k == 0.2
    assert isocline(df, calibration=["OLMo-1B"]).k == pytest.approx(0.364 ** 2 / 0.635)
    with pytest.raises(OptionError, match="rule"):
        isocline(df, rule="sideways")
    with pytest.raises(OptionError, match="calibration"):
        isocline(df, calibration="NoSuchFamily")


def test_loss_law_against_curve_fit_and_recovery():
    loss = load_loss()
    r = loss_law(loss)
    n, y = loss.params.to_numpy(float), loss.val_loss.to_numpy(float)
    f = lambda n, e, a, al: e + a * n ** (-al)  # noqa: E731  (raw N: an independent parameterisation)
    popt, pcov = curve_fit(f, n, y, p0=(1.5, 150.0, 0.24), maxfev=20000)
    assert r.E == pytest.approx(popt[0], rel=1e-4) and r.alpha == pytest.approx(popt[2], rel=1e-4)
    assert r.A_raw == pytest.approx(popt[1], rel=1e-3)
    assert r.E_se == pytest.approx(math.sqrt(pcov[0, 0]), rel=1e-2)
    pred = f(n, *popt)
    assert r.r2 == pytest.approx(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum(), rel=1e-6)
    inv = n ** popt[2] * (y - popt[0])
    assert r.cv == pytest.approx(inv.std() / inv.mean(), rel=1e-3)
    assert r.r2 > 0.999 and r.cv < 0.01
    # exact synthetic law is recovered
    nn = np.geomspace(7e7, 1.2e10, 8)
    syn = pd.DataFrame(dict(model=[f"m{i}" for i in range(8)], params=nn, val_loss=1.7 + 300 * nn ** -0.3))
    s = loss_law(syn)
    assert (s.E, s.A_raw, s.alpha) == pytest.approx((1.7, 300, 0.3), rel=1e-5)
    assert s.cv == pytest.approx(0, abs=1e-6)


def test_fixed_point_recovers_linear_law():
    a, b = -0.8, 0.4  # attracting, gamma* = 0.5
    x = np.array([8.0, 8.4, 8.7, 9.2, 9.5, 10.1])
    g = [-0.6]
    for dx in np.diff(x):  # (g1 - g0)/dx = a (g0 + g1)/2 + b, solved for g1
        g.append((g[-1] * (1 / dx + a / 2) + b) / (1 / dx - a / 2))
    r = fixed_point_xy(x, g)
    assert (r.a, r.b) == pytest.approx((a, b)) and r.gamma_star == pytest.approx(0.5)
    assert r.stability == "attracting" and r.n_points == 5
    rep = fixed_point_xy(x, -np.array(g) * 0 + np.exp(x - 8))  # dgamma/dx = gamma: repelling, gamma* ~ 0
    assert rep.stability == "repelling"
    left = fixed_point_xy(x, g, at="left")
    dg = np.diff(g) / np.diff(x)
    assert (left.a, left.b) == pytest.approx(tuple(np.polyfit(np.array(g)[:-1], dg, 1)))
    df = load_scores()
    opt = coupling_fixed_point(df, "OPT")
    ivs = [iv for iv in local_coupling(df, families=["OPT"]).intervals if not iv.reason]
    gx, gg = np.array([iv.x_mid for iv in ivs]), np.array([iv.gamma for iv in ivs])
    s, c = np.polyfit((gg[1:] + gg[:-1]) / 2, np.diff(gg) / np.diff(gx), 1)
    assert (opt.a, opt.b) == pytest.approx((s, c)) and opt.gamma_star == pytest.approx(-c / s)
    short = coupling_fixed_point(df, "Llama-1")
    assert math.isnan(short.gamma_star) and short.reason


def test_eigen_against_eigh_and_polyfit():
    df = load_scores()
    r = eigen_geometry(df, "Pythia")
    py = df[df.family == "Pythia"].sort_values("params")
    X = py[list(SCORE_COLUMNS)].to_numpy(float)
    assert len(r.windows) == 6  # cumulative 3..8
    prev = None
    for k, w in zip(range(3, 9), r.windows):
        lam, vec = np.linalg.eigh(np.corrcoef(X[:k], rowvar=False))
        assert (w.lambda1, w.lambda2) == pytest.approx((lam[-1], lam[-2]), rel=1e-10)
        assert abs(abs(np.dot(w.e2, vec[:, -2])) - 1) < 1e-9
        if prev is not None:
            assert np.dot(w.e2, prev) >= 0
            assert w.e2_step_deg == pytest.approx(math.degrees(math.acos(min(1, np.dot(w.e2, prev)))), abs=1e-6)
        prev = np.array(w.e2)
    lx = [w.log10_n for w in r.windows]
    ly = [math.log10(w.lambda2) for w in r.windows]
    p, c = np.polyfit(lx, ly, 1)
    assert r.power_exponent == pytest.approx(p) and r.power_prefactor == pytest.approx(10 ** c)
    sl = eigen_geometry(df, "Pythia", mode="sliding", width=4, matrix="covariance")
    assert len(sl.windows) == 5 and sl.windows[0].first_model == "Pythia-70M"
    lam = np.linalg.eigvalsh(np.cov(X[1:5], rowvar=False))
    assert sl.windows[1].lambda2 == pytest.approx(lam[-2])
    with pytest.raises(OptionError, match="width"):
        eigen_geometry(df, "Pythia", mode="sliding", width=20)


def test_frontier_against_direct_loop():
    fr = load_frontier()
    r = frontier_fit(fr)
    main = fr[fr.cohort == "main"]
    x, y, lab = main.SWE.to_numpy(), main.GPQA.to_numpy(), main.lab.to_numpy()
    s, c = np.polyfit(x, y, 1)
    pr = stats.pearsonr(x, y)
    assert (r.slope, r.intercept, r.r, r.p) == pytest.approx((s, c, pr.statistic, pr.pvalue), rel=1e-10)
    maes = {}
    for L in sorted(set(lab)):
        m = lab == L
        if m.sum() < 3:
            continue
        ss, cc = np.polyfit(x[~m], y[~m], 1)
        maes[L] = np.mean(np.abs(y[m] - (ss * x[m] + cc)))
        lf = next(q for q in r.labs if q.lab == L)
        assert lf.holdout_mae == pytest.approx(maes[L])
        assert lf.slope == pytest.approx(np.polyfit(x[m], y[m], 1)[0])
    v = np.array(list(maes.values()))
    assert r.n_lolo_labs == len(v) == 4
    assert r.lolo_mae_mean == pytest.approx(v.mean())
    assert r.lolo_mae_std_ddof0 == pytest.approx(v.std(ddof=0)) and r.lolo_mae_std_ddof1 == pytest.approx(v.std(ddof=1))
    h = {m.model: m for m in r.h}
    assert len(h) == len(fr) and not h["Claude Opus 4.7"].in_fit
    assert h["Claude Opus 4.7"].h == pytest.approx(94.2 - (s * 87.6 + c))
    allc = frontier_fit(fr, cohort="all")
    assert allc.n == len(fr)
    with pytest.raises(OptionError, match="cohort"):
        frontier_fit(fr, cohort="later")


def test_diagnose_pure_and_roundtrip(tmp_path):
    df = load_scores()
    m = fit_diagnose_model(df)
    d = diagnose_point(m, 2.8e9, name="Pythia-2.8B")
    # own interval 1.4B -> 2.8B: (35.6 - 38.9) / (60.7 - 52.9) = -0.4231 (tax); next 2.8B -> 6.9B -0.7879
    assert d.prev_model == "Pythia-1.4B" and d.gamma_prev == pytest.approx(-3.3 / 7.8)
    assert d.next_model == "Pythia-6.9B" and d.gamma_next == pytest.approx(-2.6 / 3.3)
    assert d.phase == "tax" and d.phase_source == "own interval"
    assert any("curation" in s for s in d.levers)
    s, c = np.polyfit(df.HS, df.TQA, 1)
    assert d.h == pytest.approx(35.6 - (s * 60.7 + c))
    new = diagnose_point(m, 5e9, family="Qwen2.5", scores={"HS": 78.0, "TQA": 52.0}, d_model=3072)
    assert new.prev_model == "Qwen2.5-3B" and new.gamma_prev == pytest.approx((52.0 - 48.9) / (78.0 - 74.6))
    assert new.phase == "bonus" and new.width_factor == pytest.approx(6.0)
    iso = diagnose_point(m, 2e9, scores={"HS": 50.0, "TQA": 20.0})
    assert iso.phase_source == "isocline" and iso.isocline_side == "below" and iso.phase == "tax"
    unknown = diagnose_point(m, 2e9)
    assert unknown.phase == "" and unknown.notes
    path = tmp_path / "dm.h5"
    write_results(path, {"/analysis/diagnose_model": m})
    m2 = DiagnoseModel.from_tree(read_results(path, "/analysis/diagnose_model"))
    for q in [dict(params=2.8e9, name="Pythia-2.8B"), dict(params=5e9, family="Qwen2.5", scores={"HS": 78, "TQA": 52})]:
        a, b = diagnose_point(m, **q), diagnose_point(m2, **q)
        assert (a.gamma_prev, a.phase, a.h, a.isocline_side) == (b.gamma_prev, b.phase, b.h, b.isocline_side)
    with pytest.raises(OptionError, match="params"):
        diagnose_point(m, -1)
