"""Phases, population coupling, h-field, isocline, loss law, fixed point, eigen-geometry, frontier and
diagnose against independent computations (numpy.polyfit / eigh, scipy curve_fit / pearsonr /
spearmanr, direct loops); every result class through the HDF5 round trip; the one unit rule."""
import math
import sys
from pathlib import Path

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
from cape_hpc.analysis.options import (CouplingOptions, DiagnoseOptions, EigenOptions, FixedPointOptions,
                                       FrontierOptions, HFieldOptions, IsoclineOptions, LossOptions,
                                       PhasesOptions, PopulationOptions)
from cape_hpc.analysis.phases import phases
from cape_hpc.analysis.population import population_coupling
from cape_hpc.errors import OptionError
from cape_hpc.io.scores import SCORE_COLUMNS, load_frontier, load_loss, load_scores
from cape_hpc.io.store import read_results, write_results

sys.path.insert(0, str(Path(__file__).parent))
from roundtrip import assert_roundtrip  # noqa: E402


def test_phases_counts_by_hand_and_roundtrip(tmp_path):
    df = load_scores()
    r = phases(df)
    # the phase of a model is the phase of the gamma attached to it (local_coupling), counted by hand
    cr = local_coupling(df)
    ph = {iv.model: iv.phase for iv in cr.intervals}
    expected = {p: sum(1 for m in df.model if ph.get(m, "") == p) for p in ("tax", "transition", "bonus")}
    expected["undefined"] = len(df) - sum(expected.values())
    assert r.counts == expected and sum(r.counts.values()) == len(df)
    fams = {p: len({iv.family for iv in cr.intervals if iv.phase == p}) for p in ("tax", "transition", "bonus")}
    assert r.families_per_phase == fams
    py = {m.model: m for m in r.models if m.family == "Pythia"}
    assert py["Pythia-70M"].phase == "" and py["Pythia-70M"].reason == "smallest model of its family"
    assert py["Pythia-1.4B"].phase == "transition"          # gamma = 0 / 3.2 = 0
    assert py["Pythia-160M"].gamma == pytest.approx(-2.8 / 4.1) and py["Pythia-160M"].phase == "tax"
    assert (r.units, r.min_delta) == ("percent", 0.5)
    assert r.provenance.options == PhasesOptions().to_dict()
    # wider thresholds move every model to transition; the same run in fractions gives the same phases
    wide = phases(df, PhasesOptions(tax_below=-10.0, bonus_above=10.0))
    assert wide.counts["transition"] == sum(expected[p] for p in ("tax", "transition", "bonus"))
    frac = phases(df, PhasesOptions(units="fraction"))
    assert frac.phase_of() == r.phase_of() and frac.min_delta == pytest.approx(0.005)
    assert_roundtrip(r, tmp_path)


def test_population_against_scipy_and_roundtrip(tmp_path):
    df = load_scores()
    r = population_coupling(df)
    g = r.groups[0]
    pr, sr = stats.pearsonr(df.HS, df.TQA), stats.spearmanr(df.HS, df.TQA)
    assert (g.group, g.n) == ("all", len(df))
    assert (g.pearson_r, g.pearson_p) == pytest.approx((pr.statistic, pr.pvalue), rel=1e-10)
    assert (g.spearman_rho, g.spearman_p) == pytest.approx((sr.statistic, sr.pvalue), rel=1e-10)
    assert math.isnan(g.perm_pearson_p) and r.provenance.seed is None and r.n_permutations == 0
    # per phase: the groups are the models of each phase of `phases` with the same thresholds
    opts = PopulationOptions(group_by="phase", min_delta=1.0)
    ph = phases(df, PhasesOptions(min_delta=1.0)).phase_of()
    for grp in population_coupling(df, opts).groups:
        sub = df[df.model.map(ph) == grp.group]
        assert grp.n == len(sub)
        assert grp.pearson_r == pytest.approx(stats.pearsonr(sub.HS, sub.TQA).statistic, rel=1e-10)
    # a permutation p: seeded, in (0, 1], recorded in provenance
    perm = population_coupling(df, PopulationOptions(group_by="family", families=("Pythia", "OPT"),
                                                     p_method="permutation", n_permutations=500, seed=3))
    assert perm.provenance.seed == 3 and perm.provenance.n_resamples == 500 and perm.n_permutations == 500
    py = next(x for x in perm.groups if x.group == "Pythia")
    assert 1 / 501 <= py.perm_pearson_p <= 0.05   # r = -0.99 over 8 models: few permutations as extreme
    with pytest.raises(OptionError, match="--p-method"):
        PopulationOptions(p_method="magic")
    with pytest.raises(OptionError, match="--n-permutations"):
        PopulationOptions(n_permutations=0)
    assert_roundtrip(perm, tmp_path)


def test_hfield_against_polyfit(tmp_path):
    df = load_scores()
    r = h_field(df)
    s, c = np.polyfit(df.HS, df.TQA, 1)
    assert (r.beta1, r.beta0) == pytest.approx((s, c), rel=1e-10)
    h = np.array([m.h for m in r.models])
    np.testing.assert_allclose(h, df.TQA - (s * df.HS + c), atol=1e-10)
    assert abs(h.sum()) < 1e-9
    py = next(g for g in r.groups if g.group == "Pythia")
    assert py.count == 8 and py.mean_h == pytest.approx(h[(df.family == "Pythia").to_numpy()].mean())
    fr = h_field(df, HFieldOptions(units="fraction"))
    assert fr.units == "fraction"
    assert fr.beta0 == pytest.approx(c / 100) and fr.models[0].h == pytest.approx(r.models[0].h / 100)
    with pytest.raises(OptionError, match="--group-by"):
        h_field(df, HFieldOptions(group_by="lab"))
    # the frontier panel: SWE/GPQA by lab, the line fitted on the main cohort only
    front = load_frontier()
    fh = h_field(front, HFieldOptions(panel="frontier", fit_cohort="main"))
    main = front[front.cohort == "main"]
    s2, c2 = np.polyfit(main.SWE, main.GPQA, 1)
    assert (fh.b1, fh.b2, fh.group_by, fh.n_fit) == ("SWE", "GPQA", "lab", len(main))
    assert (fh.beta1, fh.beta0) == pytest.approx((s2, c2), rel=1e-10)
    assert_roundtrip(r, tmp_path)


def test_isocline_k_by_hand_and_both_rules(tmp_path):
    df = load_scores()
    r = isocline(df)
    # OLMo-1B (63.60, 32.92), OLMo-7B (77.31, 35.93) (the Open LLM Leaderboard v1 rows, issue 25):
    # B1* = 0.70455, B2* = 0.34425, k = 0.34425^2 / 0.70455
    assert r.b1_star == pytest.approx(0.70455) and r.b2_star == pytest.approx(0.34425)
    assert r.k == pytest.approx(0.34425 ** 2 / 0.70455)
    iv = next(i for i in r.intervals if i.model == "BLOOM-1.1B")
    # midpoint (0.39965, 0.4212); isocline there sqrt(k * 0.39965) = 0.25928 < 0.4212: above -> predicts +
    assert iv.b1_mid == pytest.approx((37.15 + 42.78) / 200) and iv.side == "above" and iv.predicted_sign == 1
    assert iv.b2_isocline == pytest.approx(math.sqrt(r.k * (37.15 + 42.78) / 200))
    assert iv.gamma < 0 and not iv.agrees
    neg = isocline(df, IsoclineOptions(rule="above-negative"))
    assert [i.side for i in neg.intervals] == [i.side for i in r.intervals]
    assert all(a.predicted_sign == -b.predicted_sign for a, b in zip(neg.intervals, r.intervals))
    nonzero = sum(1 for i in r.intervals if i.gamma != 0)
    assert r.total_agree + neg.total_agree == nonzero
    fam = {f.family: (f.n_agree, f.n_intervals) for f in neg.families}
    # by hand (side of each interval's midpoint, sign of its gamma): OPT 7/7, BLOOM 4/5, Cerebras 5/6
    assert fam["OPT"] == (7, 7) and fam["BLOOM"] == (4, 5) and fam["Cerebras-GPT"] == (5, 6)
    ex = isocline(df, IsoclineOptions(exclude_calibration=True))
    assert "OLMo" not in {f.family for f in ex.families}
    assert isocline(df, IsoclineOptions(calibration="0.2")).k == 0.2
    assert isocline(df, IsoclineOptions(calibration="OLMo-1B")).k == pytest.approx(0.3292 ** 2 / 0.636)
    with pytest.raises(OptionError, match="--rule"):
        IsoclineOptions(rule="sideways")
    with pytest.raises(OptionError, match="--calibration"):
        isocline(df, IsoclineOptions(calibration="NoSuchFamily"))
    assert_roundtrip(r, tmp_path)


def test_isocline_min_delta_is_in_the_chosen_units():
    """One unit rule: 3 points in percent and 0.03 in fractions are one threshold (the intervals
    defined are those of the coupling with |dB1| >= 3 points)."""
    df = load_scores()
    pct = isocline(df, IsoclineOptions(min_delta=3.0))
    frac = isocline(df, IsoclineOptions(min_delta=0.03, units="fraction"))
    assert (pct.units, pct.min_delta, frac.units, frac.min_delta) == ("percent", 3.0, "fraction", 0.03)
    assert [(i.model, i.side, i.agrees) for i in pct.intervals] == [(i.model, i.side, i.agrees) for i in frac.intervals]
    by_hand = [iv.model for iv in local_coupling(df).intervals
               if iv.n != iv.prev_n and abs(iv.d_b1) >= 3.0]
    assert [i.model for i in pct.intervals] == by_hand
    assert len(pct.intervals) < len(isocline(df).intervals)


def test_loss_law_against_curve_fit_and_recovery(tmp_path):
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
    assert loss_law(loss, LossOptions(cv_ddof=1)).cv == pytest.approx(inv.std(ddof=1) / inv.mean(), rel=1e-3)
    # exact synthetic law is recovered
    nn = np.geomspace(7e7, 1.2e10, 8)
    syn = pd.DataFrame(dict(model=[f"m{i}" for i in range(8)], params=nn, val_loss=1.7 + 300 * nn ** -0.3))
    s = loss_law(syn)
    assert (s.E, s.A_raw, s.alpha) == pytest.approx((1.7, 300, 0.3), rel=1e-5)
    assert s.cv == pytest.approx(0, abs=1e-6)
    with pytest.raises(OptionError, match="--cv-ddof"):
        LossOptions(cv_ddof=2)
    assert_roundtrip(r, tmp_path)


def test_fixed_point_recovers_linear_law(tmp_path):
    a, b = -0.8, 0.4  # attracting, gamma* = 0.5
    x = np.array([8.0, 8.4, 8.7, 9.2, 9.5, 10.1])
    g = [-0.6]
    for dx in np.diff(x):  # (g1 - g0)/dx = a (g0 + g1)/2 + b, solved for g1
        g.append((g[-1] * (1 / dx + a / 2) + b) / (1 / dx - a / 2))
    r = fixed_point_xy(x, g)
    assert (r.a, r.b) == pytest.approx((a, b)) and r.gamma_star == pytest.approx(0.5)
    assert r.stability == "attracting" and r.n_points == 5
    rep = fixed_point_xy(x, np.exp(x - 8))  # dgamma/dx = gamma: repelling, gamma* ~ 0
    assert rep.stability == "repelling"
    left = fixed_point_xy(x, g, FixedPointOptions(at="left"))
    dg = np.diff(g) / np.diff(x)
    assert (left.a, left.b) == pytest.approx(tuple(np.polyfit(np.array(g)[:-1], dg, 1)))
    df = load_scores()
    opt = coupling_fixed_point(df)
    ivs = [iv for iv in local_coupling(df, CouplingOptions(families=("OPT",))).intervals if not iv.reason]
    gx, gg = np.array([iv.x_mid for iv in ivs]), np.array([iv.gamma for iv in ivs])
    s, c = np.polyfit((gg[1:] + gg[:-1]) / 2, np.diff(gg) / np.diff(gx), 1)
    assert (opt.family, opt.units, opt.min_delta) == ("OPT", "percent", 0.5)
    assert (opt.a, opt.b) == pytest.approx((s, c)) and opt.gamma_star == pytest.approx(-c / s)
    frac = coupling_fixed_point(df, FixedPointOptions(units="fraction"))
    assert (frac.a, frac.b) == pytest.approx((opt.a, opt.b), rel=1e-12)   # gamma is a ratio
    short = coupling_fixed_point(df, FixedPointOptions(family="Llama-1"))
    assert math.isnan(short.gamma_star) and short.reason
    with pytest.raises(OptionError, match="--family"):
        coupling_fixed_point(df, FixedPointOptions(family="NoSuchFamily"))
    assert_roundtrip(opt, tmp_path)


def test_eigen_against_eigh_and_polyfit(tmp_path):
    df = load_scores()
    r = eigen_geometry(df)
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
    sl = eigen_geometry(df, EigenOptions(mode="sliding", width=4, matrix="covariance"))
    assert len(sl.windows) == 5 and sl.windows[0].first_model == "Pythia-70M"
    lam = np.linalg.eigvalsh(np.cov(X[1:5], rowvar=False))
    assert sl.windows[1].lambda2 == pytest.approx(lam[-2])
    # covariance eigenvalues scale with units^2
    slf = eigen_geometry(df, EigenOptions(mode="sliding", width=4, matrix="covariance", units="fraction"))
    assert slf.windows[1].lambda2 == pytest.approx(lam[-2] * 1e-4) and slf.units == "fraction"
    with pytest.raises(OptionError, match="--width"):
        eigen_geometry(df, EigenOptions(mode="sliding", width=20))
    assert_roundtrip(r, tmp_path)


def test_frontier_against_direct_loop(tmp_path):
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
    allc = frontier_fit(fr, FrontierOptions(cohort="all"))
    assert allc.n == len(fr)
    frac = frontier_fit(fr, FrontierOptions(units="fraction"))
    assert frac.slope == pytest.approx(s) and frac.intercept == pytest.approx(c / 100)
    assert frac.lolo_mae_mean == pytest.approx(v.mean() / 100)
    with pytest.raises(OptionError, match="--cohort"):
        FrontierOptions(cohort="later")
    assert_roundtrip(r, tmp_path)


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
    with pytest.raises(OptionError, match="--params"):
        diagnose_point(m, -1)
    assert_roundtrip(m, tmp_path)
    assert_roundtrip(new, tmp_path, "/analysis/diagnose")


def test_diagnose_in_fractions_is_the_same_diagnosis():
    """One unit rule: a model fitted in fractions with the query in fractions gives the same phase,
    gamma and isocline side, and h / 100."""
    df = load_scores()
    pct = fit_diagnose_model(df, DiagnoseOptions(min_delta=4.0))
    frac = fit_diagnose_model(df, DiagnoseOptions(min_delta=0.04, units="fraction"))
    assert frac.units == "fraction" and frac.beta0 == pytest.approx(pct.beta0 / 100) and frac.k == pct.k
    for q in [dict(params=2.8e9, name="Pythia-2.8B"), dict(params=5e9, family="Qwen2.5", scores={"HS": 78.0, "TQA": 52.0}),
              dict(params=1.2e9, family="Pythia", scores={"HS": 51.0, "TQA": 39.0})]:
        qf = dict(q, scores={k: v / 100 for k, v in q.get("scores", {}).items()}) if "scores" in q else q
        a, b = diagnose_point(pct, **q), diagnose_point(frac, **qf)
        assert (a.phase, a.phase_source, a.isocline_side, a.gamma_reason != "") == \
            (b.phase, b.phase_source, b.isocline_side, b.gamma_reason != "")
        assert b.gamma_prev == pytest.approx(a.gamma_prev, nan_ok=True)
        assert b.h == pytest.approx(a.h / 100) and b.isocline_b2 == pytest.approx(a.isocline_b2 / 100)
    # Pythia-1B -> 1.2B query: |dB1| = 1.3 points < 4 points: the own interval is undefined in both
    a = diagnose_point(pct, 1.2e9, family="Pythia", scores={"HS": 51.0, "TQA": 39.0})
    assert math.isnan(a.gamma_prev) and "min_delta 4" in a.gamma_reason
