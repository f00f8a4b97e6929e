"""Local coupling, phases and population coupling against hand computations and scipy."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cape_hpc.analysis.coupling import CouplingResult, local_coupling
from cape_hpc.analysis.options import CouplingOptions, PermutationOptions, PopulationOptions
from cape_hpc.analysis.phases import classify_phase, phases
from cape_hpc.analysis.population import correlate, permutation_p, population_coupling
from cape_hpc.errors import OptionError
from cape_hpc.io.scores import load_scores
from roundtrip import assert_roundtrip


def lc(df, b1="HS", b2="TQA", **kw):
    """local_coupling with CouplingOptions from keywords (families as a tuple)."""
    if "families" in kw:
        kw["families"] = tuple(kw["families"])
    return local_coupling(df, CouplingOptions(pair=(b1, b2), **kw))

# Pythia rows of the curated table (HS, TQA in percent), written out so the arithmetic is visible
PYTHIA = [("Pythia-70M", 70e6, 27.3, 47.1), ("Pythia-160M", 160e6, 31.4, 44.3),
          ("Pythia-410M", 410e6, 40.9, 41.2), ("Pythia-1B", 1e9, 49.7, 38.9),
          ("Pythia-1.4B", 1.4e9, 52.9, 38.9), ("Pythia-2.8B", 2.8e9, 60.7, 35.6),
          ("Pythia-6.9B", 6.9e9, 64.0, 33.0), ("Pythia-12B", 12e9, 67.3, 32.0)]
OPT = [("OPT-125M", 125e6, 31.47, 42.87), ("OPT-350M", 350e6, 36.73, 40.83), ("OPT-1.3B", 1.3e9, 54.53, 38.71),
       ("OPT-2.7B", 2.7e9, 61.43, 37.43), ("OPT-6.7B", 6.7e9, 68.66, 35.12), ("OPT-13B", 13e9, 71.2, 34.1),
       ("OPT-30B", 30e9, 74.07, 35.16), ("OPT-66B", 66e9, 76.25, 35.43)]
# a family with the two undefined cases: a B1 step below 0.5 points, and two models of equal N
EDGE = [("X-a", 1e8, 30.0, 40.0), ("X-b", 2e8, 30.3, 41.0), ("X-c", 2e8, 32.0, 39.0), ("X-d", 4e8, 35.0, 38.0)]


def table(*families):
    rows = []
    for fam, models in families:
        for name, n, hs, tqa in models:
            rows.append(dict(model=name, family=fam, params=n, d_model=np.nan, HS=hs, TQA=tqa, ARC=np.nan,
                             WG=np.nan, MMLU=np.nan, tqa_variant="mc2", source="test"))
    return pd.DataFrame(rows)


# shuffled on purpose: the function must sort by N within each family
DF = table(("Pythia", PYTHIA[::-1]), ("OPT", OPT[3:] + OPT[:3]), ("X", EDGE[::-1])).sample(frac=1, random_state=3)


def test_pythia_by_hand():
    r = lc(DF, "HS", "TQA")
    g = {iv.model: iv.gamma for iv in r.intervals if iv.family == "Pythia"}
    expected = {
        "Pythia-160M": (44.3 - 47.1) / (31.4 - 27.3),   # -2.8 / 4.1 = -0.6829
        "Pythia-410M": (41.2 - 44.3) / (40.9 - 31.4),   # -3.1 / 9.5 = -0.3263
        "Pythia-1B": (38.9 - 41.2) / (49.7 - 40.9),     # -2.3 / 8.8 = -0.2614
        "Pythia-1.4B": (38.9 - 38.9) / (52.9 - 49.7),   #  0.0 / 3.2 = 0
        "Pythia-2.8B": (35.6 - 38.9) / (60.7 - 52.9),   # -3.3 / 7.8 = -0.4231
        "Pythia-6.9B": (33.0 - 35.6) / (64.0 - 60.7),   # -2.6 / 3.3 = -0.7879
        "Pythia-12B": (32.0 - 33.0) / (67.3 - 64.0),    # -1.0 / 3.3 = -0.3030
    }
    assert g.keys() == expected.keys()
    for k, v in expected.items():
        assert g[k] == pytest.approx(v, abs=1e-12)
    iv = next(iv for iv in r.intervals if iv.model == "Pythia-160M")
    assert iv.prev_model == "Pythia-70M"
    assert iv.x_mid == pytest.approx((math.log10(70e6) + math.log10(160e6)) / 2)
    assert iv.b1_mid == pytest.approx((27.3 + 31.4) / 2)


def test_opt_by_hand_and_phases():
    r = lc(DF, "HS", "TQA")
    ivs = [iv for iv in r.intervals if iv.family == "OPT"]
    assert [iv.model for iv in ivs] == [m[0] for m in OPT[1:]]
    # 350M: -2.04/5.26 = -0.3878 (tax); 1.3B: -2.12/17.8 = -0.1191 (tax); 2.7B: -1.28/6.9 = -0.1855 (tax);
    # 6.7B: -2.31/7.23 = -0.3195 (tax); 13B: -1.02/2.54 = -0.4016 (tax); 30B: 1.06/2.87 = 0.3693 (bonus);
    # 66B: 0.27/2.18 = 0.1239 (bonus)
    hand = [(40.83 - 42.87) / (36.73 - 31.47), (38.71 - 40.83) / (54.53 - 36.73), (37.43 - 38.71) / (61.43 - 54.53),
            (35.12 - 37.43) / (68.66 - 61.43), (34.1 - 35.12) / (71.2 - 68.66), (35.16 - 34.1) / (74.07 - 71.2),
            (35.43 - 35.16) / (76.25 - 74.07)]
    np.testing.assert_allclose([iv.gamma for iv in ivs], hand, rtol=0, atol=1e-12)
    assert [iv.phase for iv in ivs] == ["tax"] * 5 + ["bonus"] * 2


def test_undefined_intervals_and_no_cross_family():
    r = lc(DF, "HS", "TQA")
    x = {iv.model: iv for iv in r.intervals if iv.family == "X"}
    assert math.isnan(x["X-b"].gamma) and "min_delta" in x["X-b"].reason and x["X-b"].phase == ""
    assert math.isnan(x["X-c"].gamma) and x["X-c"].reason == "equal N"
    assert x["X-d"].gamma == pytest.approx((38.0 - 39.0) / (35.0 - 32.0))
    # one interval per model except each family's smallest: 7 + 7 + 3, never across families
    assert len(r.intervals) == 17
    assert all(iv.prev_model.split("-")[0] == iv.model.split("-")[0] for iv in r.intervals)
    # a lower min_delta makes X-b defined
    r2 = lc(DF, "HS", "TQA", min_delta=0.2)
    xb = next(iv for iv in r2.intervals if iv.model == "X-b")
    assert xb.gamma == pytest.approx(1.0 / 0.3)


def test_units_fraction_scales_min_delta_not_gamma():
    a = lc(DF, units="percent")
    b = lc(DF, units="fraction")
    assert b.min_delta == pytest.approx(0.005)
    ga = np.array([iv.gamma for iv in a.intervals])
    gb = np.array([iv.gamma for iv in b.intervals])
    np.testing.assert_allclose(ga, gb, equal_nan=True)
    # a threshold of 0.5 in fractions means 50 points: nothing is defined
    c = lc(DF, units="fraction", min_delta=0.5)
    assert all(math.isnan(iv.gamma) for iv in c.intervals)


def test_any_pair_and_bad_options():
    df = load_scores()
    r = lc(df, "HS", "ARC")
    assert "Gemma-3-4B" in r.dropped  # blank ARC
    assert r.provenance.options["pair"] == ["HS", "ARC"] and r.provenance.inputs["scores"] == df.attrs["sha256"]
    with pytest.raises(OptionError, match="pair"):
        lc(df, "HS", "NOPE")
    with pytest.raises(OptionError, match="differ"):
        lc(df, "HS", "HS")
    with pytest.raises(OptionError, match="--min-delta"):
        lc(df, min_delta=-1)
    with pytest.raises(OptionError, match="--units"):
        lc(df, units="permille")
    with pytest.raises(OptionError, match="--families"):
        lc(df, families=["NoSuchFamily"])
    with pytest.raises(OptionError, match="--tax-below"):
        lc(df, tax_below=0.5, bonus_above=0.1)


def test_classify_phase_bounds():
    assert classify_phase(-0.1) == "transition" and classify_phase(0.1) == "transition"
    assert classify_phase(-0.1000001) == "tax" and classify_phase(0.1000001) == "bonus"
    assert classify_phase(math.nan) is None
    assert classify_phase(0.15, -0.2, 0.2) == "transition"


def test_phases_per_model():
    p = phases(DF)
    ph = p.phase_of()
    assert ph["Pythia-70M"] == "" and ph["OPT-125M"] == ""          # smallest: no phase
    assert ph["Pythia-1.4B"] == "transition" and ph["OPT-30B"] == "bonus" and ph["Pythia-1B"] == "tax"
    assert ph["X-b"] == ""                                              # undefined interval
    assert p.counts == {"tax": 12, "transition": 1, "bonus": 2, "undefined": 5}
    assert p.families_per_phase == {"tax": 3, "transition": 1, "bonus": 1}


def test_population_against_scipy():
    df = load_scores()
    r = population_coupling(df)
    g = r.groups[0]
    pr = stats.pearsonr(df["HS"], df["TQA"])
    sr = stats.spearmanr(df["HS"], df["TQA"])
    assert g.n == len(df)
    assert g.pearson_r == pytest.approx(pr.statistic, abs=1e-12) and g.pearson_p == pytest.approx(pr.pvalue)
    assert g.spearman_rho == pytest.approx(sr.statistic, abs=1e-12) and g.spearman_p == pytest.approx(sr.pvalue)
    fam = population_coupling(df, PopulationOptions(group_by="family"))
    py = next(x for x in fam.groups if x.group == "Pythia")
    sub = df[df.family == "Pythia"]
    assert py.pearson_r == pytest.approx(stats.pearsonr(sub.HS, sub.TQA).statistic, abs=1e-12)
    assert py.pearson_r == pytest.approx(-0.9886, abs=5e-4)  # the paper's -0.989 on these rows
    small = next(x for x in fam.groups if x.group == "OLMo")
    assert small.n == 2 and math.isnan(small.pearson_r) and "n = 2" in small.reason
    ph = population_coupling(df, PopulationOptions(group_by="phase"))
    assert [x.group for x in ph.groups] == ["tax", "transition", "bonus"]


def test_permutation_p_exact_matches_scipy():
    rng = np.random.default_rng(5)
    x = rng.normal(size=6)
    y = 0.6 * x + rng.normal(size=6)
    # two-sided as P(|r_perm| >= |r_obs|): scipy's statistic |r| with alternative 'greater'
    ref = stats.permutation_test((y,), lambda yy: abs(stats.pearsonr(x, yy).statistic), permutation_type="pairings",
                                 n_resamples=np.inf, alternative="greater")
    ours = permutation_p(x, y, method="exact")
    assert ours == pytest.approx(ref.pvalue, abs=1e-12)
    # the random version estimates the same p within Monte-Carlo error (sd ~ sqrt(p(1-p)/R))
    mc = permutation_p(x, y, method="permutation", perm=PermutationOptions(n_permutations=20000, seed=1))
    assert abs(mc - ours) < 4 * math.sqrt(ours * (1 - ours) / 20000) + 1e-4
    g = correlate(x, y, p_method="exact")
    assert g.perm_pearson_p == pytest.approx(ours)
    ref_s = stats.permutation_test((y,), lambda yy: abs(stats.spearmanr(x, yy).statistic),
                                   permutation_type="pairings", n_resamples=np.inf, alternative="greater")
    assert g.perm_spearman_p == pytest.approx(ref_s.pvalue, abs=1e-12)
    with pytest.raises(OptionError, match="--p-method"):
        permutation_p(np.arange(12.0), np.arange(12.0)[::-1], method="exact")
    with pytest.raises(OptionError, match="--p-method"):
        population_coupling(load_scores(), PopulationOptions(p_method="magic"))


def test_result_round_trips_and_options_are_stored_unchanged(tmp_path):
    opts = CouplingOptions(pair=("HS", "TQA"), families=("Pythia", "X"), min_delta=0.4)
    r = local_coupling(DF, opts)
    assert isinstance(r, CouplingResult) and r.provenance.options == opts.to_dict()
    # X: a -> b has |dB1| = 0.3 < 0.4; b -> c have equal N; c -> d is defined
    assert r.min_delta == 0.4 and [iv.reason for iv in r.by_family()["X"]] == ["|dB1| = 0.3 < min_delta 0.4",
                                                                                "equal N", ""]
    back = assert_roundtrip(r, tmp_path, "/analysis/coupling")
    assert back.intervals[0] == r.intervals[0]
    from cape_hpc.schema import to_jsonable

    assert to_jsonable(local_coupling(DF).intervals) == to_jsonable(local_coupling(DF, CouplingOptions()).intervals)


def test_gammas_are_the_kernel_gamma_rule():
    """local_coupling and the N_c estimators share cape_kernels.gamma_rule: the same gammas, bit for bit,
    and the same undefined intervals."""
    from cape_kernels import gamma_rule, nc_intervals

    df = load_scores()
    r = lc(df)
    for fam, ivs in r.by_family().items():
        g = df[df.family == fam].sort_values(["params", "model"], kind="mergesort")
        gam, code = gamma_rule(np.zeros(len(g), np.int64), g.params, g.HS, g.TQA, 0.5)
        np.testing.assert_array_equal(gam, [iv.gamma for iv in ivs])
        assert [c != 0 for c in code] == [bool(iv.reason) for iv in ivs]
        xs, gs = nc_intervals(np.zeros(len(g), np.int64), np.log10(g.params), g.HS, g.TQA, 0.5)
        np.testing.assert_array_equal(gs, [iv.gamma for iv in ivs if not iv.reason])
        np.testing.assert_allclose(xs, [iv.x_mid for iv in ivs if not iv.reason], rtol=1e-15)


def test_interval_rows_by_hand_and_their_users():
    """interval_rows: midpoints, mean values and change per decade between consecutive points, NaN at a
    repeated x; the same rows as the gamma intervals, the fixed point and the dynamics' forward rows."""
    from cape_hpc.analysis.coupling import interval_rows
    from cape_hpc.analysis.fixedpoint import fixed_point_xy
    from cape_hpc.dynamics import Trajectory, derivative_rows

    x = np.array([8.0, 8.5, 8.5, 10.0])
    v = np.array([[1.0, 10.0], [2.0, 7.0], [4.0, 7.0], [7.0, 1.0]])
    x_mid, mid, slope = interval_rows(x, v)
    np.testing.assert_array_equal(x_mid, [8.25, 8.5, 9.25])
    np.testing.assert_array_equal(mid, [[1.5, 8.5], [3.0, 7.0], [5.5, 4.0]])
    np.testing.assert_array_equal(slope[[0, 2]], [[2.0, -6.0], [2.0, -4.0]])
    assert np.isnan(slope[1]).all()
    _, _, s1 = interval_rows(x, v[:, 0])
    assert s1.shape == (3,) and s1[0] == 2.0 and np.isnan(s1[1])
    assert [a.size for a in interval_rows(np.array([9.0]), np.array([1.0]))] == [0, 0, 0]
    # the gamma intervals: x_mid and the mean scores are these rows (log10 N of the models)
    ivs = local_coupling(DF, CouplingOptions(families=("Pythia",))).intervals
    py = DF[DF["family"] == "Pythia"].sort_values(["params", "model"])
    xm, m, _ = interval_rows(np.log10(py["params"].to_numpy(float)), py[["HS", "TQA"]].to_numpy(float))
    assert [iv.x_mid for iv in ivs] == list(xm) and [iv.b1_mid for iv in ivs] == list(m[:, 0])
    assert ivs[0].d_b2_per_decade == pytest.approx(ivs[0].d_b2 / (math.log10(ivs[0].n) - math.log10(ivs[0].prev_n)))
    # the fixed point regresses the forward slope of gamma on its midpoint value
    fp = fixed_point_xy([1.0, 2.0, 4.0, 5.0], [0.5, 0.3, 0.2, -0.1])
    np.testing.assert_allclose(fp.dgamma, [-0.2, -0.05, -0.3], rtol=1e-12)
    np.testing.assert_allclose(fp.gamma_at, [0.4, 0.25, 0.05], rtol=1e-12)
    # the dynamics' forward rows: state at the midpoint, change per decade
    t = Trajectory("F", ["a", "b", "c", "d"], np.array([8.0, 8.5, 9.0, 10.0]), v * 10, ("HS", "TQA"))
    xr, sr, dr = derivative_rows(t, "forward", scale=0.1)
    np.testing.assert_array_equal(xr, [8.25, 8.75, 9.5])
    np.testing.assert_allclose(dr, [[2.0, -6.0], [4.0, 0.0], [3.0, -6.0]], rtol=1e-12)
    np.testing.assert_allclose(sr, [[1.5, 8.5], [3.0, 7.0], [5.5, 4.0]], rtol=1e-12)


def test_ols_line_of_a_constant_x_is_undefined_even_when_its_mean_rounds():
    """x = log10(52e9) three times: numpy's mean differs from x by rounding, so x - mean is not 0;
    the slope is still NaN (as the crossmodel ladder slope, which uses it, always said)."""
    from cape_hpc.analysis import ols_line

    x = np.full(3, math.log10(52e9))
    assert x.mean() != x[0]
    assert all(math.isnan(v) for v in ols_line(x, np.array([1.0, 2.0, 4.0])))
    slope, icpt = ols_line(np.array([1.0, 2.0, 4.0]), np.array([3.0, 5.0, 9.0]))
    assert (slope, icpt) == pytest.approx((2.0, 1.0), rel=1e-14)
    ref = stats.linregress([1.0, 2.0, 3.5, 7.0], [0.3, 0.1, 0.9, 1.4])
    assert ols_line(np.array([1.0, 2.0, 3.5, 7.0]), np.array([0.3, 0.1, 0.9, 1.4])) == pytest.approx(
        (ref.slope, ref.intercept), rel=1e-12)
